"""Run a backup script: events around the master, the method, each target and directory.

Order (as the original tool documents it): script prepare, master prepare, method
prepare; then for each target server in order: server prepare, for each directory
prepare / copy / success|failure / finish, server success|failure / finish; then the
method, master and script success|failure / finish. A failing prepare skips that
object's work and fires its failure and finish. Unlike the original, a failing target
does not stop the other targets: every failure is recorded and the run fails at the end.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from synco import root_guard, shell, staging
from synco.core import commands
from synco.core.errors import ConfigError, OperationError, SyncoError
from synco.core.model import Directory, Event, Events, Script, Server
from synco.core.paths import normalize_relative
from synco.core.resolution import CurrentDecision, MasterDecision, is_local
from synco.core.root_paths import Side, unmounted
from synco.core.rsync import Features, Verdict, classify, describe_exit, parse_stats
from synco.core.snapshot_names import METADATA_DIR
from synco.core.staging import InView, staging_of
from synco.core.transfer import Transfer, path_in, plan_transfer
from synco.events import Scope, fire
from synco.lock import snapshot_lock
from synco.report import CopyRecord, EventRecord, RunReport
from synco.rsync_probe import REMOTE_PROBE, keeps_nanoseconds, local_features, remote_keeps_nanoseconds
from synco.snapshot_store import SnapshotStore


class ChildrenFailed(OperationError):
    """Some of an object's children failed; each recorded its own failure already."""


def _own_metadata(directory: str, itemized: str) -> bool:
    """An rsync itemize line about a snapshot's own .synco-snapshot/ (not the source's data)."""
    name = itemized.split(None, 1)[-1] if " " in itemized else itemized
    return directory == "." and name.startswith(f"{METADATA_DIR}/")


def stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Execution:
    """One run of a script, from the point of view of the machine synco runs on."""

    def __init__(
        self,
        script: Script,
        master: MasterDecision,
        current: CurrentDecision,
        *,
        dry_run: bool = False,
        progress: bool = False,
        log: Callable[[str], None] = stderr_line,
        features: Features | None = None,
    ) -> None:
        self.script = script
        self.master = script.server(master.server)
        self.current = current
        self.dry_run = dry_run
        self.progress = progress
        self.log = log
        self.features = features or local_features()
        self._has_previous: dict[str, bool] = {}  # target -> has a `latest` to hard-link to
        self._nanoseconds: dict[tuple[str, str], bool] = {}  # (target, path) -> keeps them
        self._sources: dict[str, InView] = {}  # directory -> where rsync reads it (a staged view)
        self._views: list[staging.View] = []
        self.report = RunReport(
            script=script.source,
            master=master.server,
            master_reason=master.reason,
            current=current.server,
            current_reason=current.reason,
            dry_run=dry_run,
        )

    # -- the command runner handlers use -------------------------------------------------

    def is_local(self, server: Server) -> bool:
        return is_local(server, self.current, self.script)

    def run_on(self, server: Server | None, argv: list[str], env: dict[str, str]) -> shell.Completed:
        if server is None:
            cwd = str(Path(self.script.source).resolve().parent) if self.script.source else None
            return shell.run(argv, env=env, cwd=cwd)
        if self.is_local(server):
            if not os.path.isdir(server.root):
                return shell.Completed(tuple(argv), 1, "", f"synco: {server.root} does not exist", 0.0)
            return shell.run(argv, env=env, cwd=server.root)
        return shell.run(commands.remote_argv(server, argv, env, cwd=server.root))

    # -- the run ------------------------------------------------------------------------

    def run(self) -> RunReport:
        self.log(f"master: {self.report.master_reason}")
        self.log(f"this machine: {self.current.server or '(no server)'} ({self.current.reason})")
        name = Path(self.script.source).name if self.script.source else "script"
        self._attempt("script", name, self.script.events, self._scope("script"), self._run_master)
        self._record_skipped()
        self.log(self.report.summary())
        return self.report

    def _record_skipped(self) -> None:
        """A record for every copy an earlier failure prevented, so the report is complete."""
        done = {(c.target, c.directory) for c in self.report.copies}
        for target in self.script.data_servers:
            if target.name == self.master.name:
                continue
            for directory in self.script.directories:
                path = normalize_relative(directory.path)
                if (target.name, path) not in done:
                    self.report.copies.append(
                        CopyRecord(
                            path,
                            self.master.name,
                            target.name,
                            "",
                            "skipped",
                            None,
                            "not attempted: an earlier step failed",
                            0.0,
                            (),
                        )
                    )

    def _scope(self, level: str, **objects: object) -> Callable[[Event, str | None], Scope]:
        def make(event: Event, error: str | None) -> Scope:
            return Scope(
                event=event,
                level=level,
                script=self.script,
                master=self.master,
                error=error,
                dry_run=self.dry_run,
                runner=self,
                log=self.log,
                **objects,  # type: ignore[arg-type]
            )

        return make

    def _run_master(self) -> bool:
        scope = self._scope("master", server=self.master, target=self.master)
        if not self._attempt("master", self.master.name, self.master.events, scope, self._run_method):
            raise ChildrenFailed(f"master {self.master.name} failed")
        return True

    def _run_method(self) -> bool:
        method = self.script.method
        if not self._attempt("method", method.name, method.events, self._scope("method"), self._run_targets):
            raise ChildrenFailed(f"method {method.name} failed")
        return True

    def _run_targets(self) -> bool:
        if self.master.mountpoint is not None and not self._mounted(self.master):
            # before any target is touched (a snapshot begun); each copy checks again
            raise OperationError(unmounted(self.master.name, self.master.mountpoint, Side.SOURCE))
        targets = [s for s in self.script.data_servers if s.name != self.master.name]
        if not any(staging_of(self.master, d) for d in self.script.directories):
            results = [self._run_target(target) for target in targets]
        else:
            runner = staging.runner_on(self.master, self.is_local(self.master))
            identity = staging.identity_of(self.script, self.current.server)
            stager = staging.Stager(runner, identity, self.master.name, self.log, self.dry_run)
            try:
                with stager:
                    self._sources = staging.stage(
                        stager, self.master, self.script.directories, self.script.method.arguments
                    )
                    self._views = stager.views
                    self.report.staged = [view.record() for view in stager.views]
                    results = [self._run_target(target) for target in targets]
            finally:
                for failure in stager.failures:  # a view left behind, also when the run failed
                    self._failure(failure)
        failed = results.count(False)
        if failed:
            raise ChildrenFailed(f"{failed} of {len(targets)} target(s) failed")
        return True

    def _run_target(self, target: Server) -> bool:
        scope = self._scope("server", server=target, target=target)

        def directories() -> bool:
            self._check_mountpoint(target)  # before anything, the lock included, is written there
            if self.script.method.snapshots and self.is_local(target) and not self.dry_run:
                with snapshot_lock(target.root, create=True):
                    return write()
            return write()

        def write() -> bool:
            started = datetime.now(UTC)
            first_copy = len(self.report.copies)
            if self.script.method.snapshots:
                self._begin_snapshot(target)
            results = [self._run_directory(target, d) for d in self.script.directories]
            failed = results.count(False)
            if failed:
                raise ChildrenFailed(f"{failed} of {len(results)} directories failed")
            if self.script.method.snapshots and self.script.method.publish and not self.dry_run:
                self._publish_snapshot(target, started, self.report.copies[first_copy:])
            return True

        return self._attempt("server", target.name, target.events, scope, directories)

    def _run_directory(self, target: Server, directory: Directory) -> bool:
        scope = self._scope("directory", target=target, directory=directory)
        return self._attempt(
            "directory",
            directory.path,
            directory.events,
            scope,
            lambda: self._copy(target, directory),
        )

    # -- verification -------------------------------------------------------------------

    def verify(self, only: str | None = None) -> dict[str, object]:
        """Compare each target's copy with the master by checksum; nothing is written."""
        targets: dict[str, dict[str, object]] = {}
        for target in self.script.data_servers:
            if target.name == self.master.name or (only is not None and target.name != only):
                continue
            differences: list[str] = []
            error = None
            for directory in self.script.directories:
                try:
                    transfer = plan_transfer(
                        self.script,
                        self.master,
                        target,
                        directory,
                        is_local=self.is_local,
                        features=self.features,
                        verify=True,
                    )
                except SyncoError as failure:
                    error = str(failure)
                    break
                error = self._guard(transfer)
                if error is not None:
                    break
                completed = shell.run(transfer.command())
                if classify(completed.returncode) == Verdict.ERROR:
                    error = f"{directory.path}: rsync exit {completed.returncode}: {completed.last_lines(3)}"
                    break
                differences += [
                    f"{transfer.directory}: {line}"
                    for line in completed.stdout.splitlines()
                    if line.strip()
                    and not line.startswith(".d")
                    and not _own_metadata(transfer.directory, line)
                ]
            targets[target.name] = {
                "ok": not differences and error is None,
                "differences": differences,
                "error": error,
            }
        if only is not None and not targets:
            raise ConfigError(f"--target {only!r} is not a target of this script")
        return {"ok": all(t["ok"] for t in targets.values()), "master": self.master.name, "targets": targets}

    # -- snapshots on the target --------------------------------------------------------

    def _on_target(self, target: Server, arguments: list[str], what: str) -> str:
        """Run a snapshot operation on the target: in-process here, `synco` there through ssh."""
        argv = [target.synco_path, "--root", target.root, *arguments]
        completed = shell.run(commands.remote_argv(target, argv))
        for line in completed.stderr.splitlines():
            self.log(f"  | {target.name}: {line}")
        if completed.returncode != 0:
            raise OperationError(
                f"{what} on {target.name} failed (exit {completed.returncode}): {completed.last_lines(3)}"
            )
        return completed.stdout.strip()

    def _mounted(self, server: Server) -> bool:
        """Whether `server`'s mountpoint (if it has one) is mounted, here or over ssh."""
        if server.mountpoint is None:
            return True
        if self.is_local(server):
            return os.path.ismount(server.mountpoint)
        probe = commands.remote_argv(server, ["mountpoint", "-q", server.mountpoint])
        return shell.run(probe).returncode == 0

    def _guard(self, transfer: Transfer) -> str | None:
        """Why this copy must not run now (a symlink on the directory's path on either side,
        or an unmounted source or target), or None: checked just before every copy, since
        an earlier copy of the run can have put a symlink there. One ssh command per remote side."""
        for side in (Side.SOURCE, Side.TARGET):
            server, paths = transfer.guarded_server(side), transfer.guarded_paths(side)
            refusal = root_guard.check(server, transfer.directory, paths, side, local=self.is_local(server))
            if refusal is not None:
                return refusal
        return None

    def _check_mountpoint(self, target: Server) -> None:
        """Refuse to write to a target whose backup disk is not mounted (it would fill the disk beneath)."""
        if target.mountpoint is not None and not self._mounted(target):
            raise OperationError(unmounted(target.name, target.mountpoint, Side.TARGET))

    def _begin_snapshot(self, target: Server) -> None:
        """Ready the target's snapshot in progress, without what the script no longer copies,
        and learn whether there is a previous snapshot to hard-link to."""
        backend = self.script.method.snapshot_backend
        directories = [normalize_relative(d.path) for d in self.script.directories]
        if self.is_local(target):
            store = SnapshotStore(Path(target.root))
            if not self.dry_run:
                for path in store.begin(backend, directories):
                    self.log(f"removed {path} from {target.name}'s snapshot in progress: no longer copied")
            self._has_previous[target.name] = store.latest_name() is not None
            return
        if self.dry_run:
            return
        arguments = ["snapshot-begin", "--backend", backend]
        for directory in directories:
            arguments += ["--directory", directory]
        reply = self._on_target(target, arguments, "preparing the snapshot")
        try:
            self._has_previous[target.name] = json.loads(reply.splitlines()[-1]).get("latest") is not None
        except (ValueError, IndexError, AttributeError):
            self._has_previous[target.name] = True  # an older synco there: link to be safe

    def _publish_snapshot(self, target: Server, started: datetime, copies: list[CopyRecord]) -> None:
        method = self.script.method
        metadata = {
            "source": self.master.name,
            "target": target.name,
            "started": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "finished": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "exit_status": max((c.exit_code or 0 for c in copies), default=0),
            "directories": {c.directory: {"exit_code": c.exit_code, **c.stats} for c in copies},
        }
        if self._views:
            metadata["staged"] = [view.record() for view in self._views]
        if self.is_local(target):
            name = SnapshotStore(Path(target.root)).publish(
                metadata, with_manifest=method.verify, backend=method.snapshot_backend
            )
        else:
            arguments = ["rotate", "--metadata", json.dumps(metadata), "--backend", method.snapshot_backend]
            name = self._on_target(
                target, arguments + (["--manifest"] if method.verify else []), "publishing"
            )
        self.log(f"published snapshot {name} on {target.name}")
        self.report.snapshots[target.name] = name

    def _keeps_nanoseconds(self, target: Server, path: str) -> bool:
        """Whether the target's file system keeps nanosecond times where `path` is (probed
        once per target and path, with a file created and removed; not in a dry run)."""
        if self.dry_run:
            return False
        key = (target.name, path)
        if key not in self._nanoseconds:
            if self.is_local(target):
                self._nanoseconds[key] = keeps_nanoseconds(path)
            else:
                probe = shell.run(commands.remote_argv(target, ["sh", "-c", REMOTE_PROBE, "sh", path]))
                self._nanoseconds[key] = probe.returncode == 0 and remote_keeps_nanoseconds(probe.stdout)
        return self._nanoseconds[key]

    def _plan(self, target: Server, directory: Directory, nanoseconds: bool = False) -> Transfer:
        return plan_transfer(
            self.script,
            self.master,
            target,
            directory,
            is_local=self.is_local,
            features=self.features,
            dry_run=self.dry_run,
            progress=self.progress,
            link_dest=self._has_previous.get(target.name, True),
            nanoseconds=nanoseconds,
            source=self._sources.get(normalize_relative(directory.path)),
        )

    def _refuse(self, transfer: Transfer, refusal: str) -> None:
        """Record a copy the path check refused, and fail it."""
        self.report.copies.append(
            CopyRecord(
                transfer.directory,
                self.master.name,
                transfer.target.name,
                transfer.runs_on.name,
                "failed",
                None,
                refusal,
                0.0,
                (),
            )
        )
        raise OperationError(refusal)

    def _copy(self, target: Server, directory: Directory) -> bool:
        transfer = self._plan(target, directory)
        refusal = self._guard(transfer)
        if refusal is not None:
            self._refuse(transfer, refusal)
        # Probed only once the path is known to lead to no symlink: the probe creates a file there.
        if self._keeps_nanoseconds(target, path_in(target, transfer.directory, transfer.into)):
            transfer = self._plan(target, directory, nanoseconds=True)
        where = "here" if transfer.local else f"on {transfer.runs_on.name}"
        self.log(f"copy {transfer.describe()} (rsync {where})")
        argv = transfer.command()
        completed = shell.run(argv, echo=self.progress)
        verdict = classify(completed.returncode)
        if self.dry_run:
            for line in completed.stdout.splitlines():
                self.log(f"  | {line}")
        message = describe_exit(completed.returncode) if completed.returncode else "ok"
        detail = completed.last_lines() if verdict != Verdict.OK else ""
        status = {Verdict.OK: "ok", Verdict.WARNING: "warning", Verdict.ERROR: "failed"}[verdict]
        self.report.copies.append(
            CopyRecord(
                directory=transfer.directory,
                master=self.master.name,
                target=target.name,
                runs_on=transfer.runs_on.name,
                status=status,
                exit_code=completed.returncode,
                message=f"{message}: {detail}" if detail else message,
                duration=round(completed.duration, 3),
                command=tuple(argv),
                stats=parse_stats(completed.stdout),
            )
        )
        if verdict == Verdict.WARNING:
            self.log(f"warning: {transfer.describe()}: rsync: {message} (exit {completed.returncode})")
        if verdict == Verdict.ERROR:
            raise OperationError(
                f"copy of {transfer.directory!r} from {self.master.name} to {target.name} failed: "
                f"rsync exit {completed.returncode} ({message})" + (f": {detail}" if detail else "")
            )
        self.log(f"  done in {completed.duration:.1f} s")
        return True

    def _attempt(
        self,
        level: str,
        name: str,
        events: Events,
        make_scope: Callable[[Event, str | None], Scope],
        body: Callable[[], object],
    ) -> bool:
        """prepare, body, success|failure, finish; returns whether the object succeeded.

        Root causes (a failed prepare, copy or handler) go to the report's failures;
        a ChildrenFailed only says that something below already failed.
        """
        error = self._fire(level, name, events, Event.PREPARE, make_scope, None)
        if error is not None:
            error = self._failure(f"{level} {name}: prepare failed: {error}")
        else:
            try:
                body()
            except ChildrenFailed as failure:
                error = f"{level} {name}: {failure}"
            except SyncoError as failure:
                error = self._failure(f"{level} {name}: {failure}")
            except Exception as failure:  # a bug or an OS error still fires failure and finish
                error = self._failure(f"{level} {name}: {type(failure).__name__}: {failure}")
            else:
                success_error = self._fire(level, name, events, Event.SUCCESS, make_scope, None)
                if success_error is not None:
                    error = self._failure(f"{level} {name}: success handler failed: {success_error}")
        if error is not None:
            self.log(f"failed: {error}")
            failure_error = self._fire(level, name, events, Event.FAILURE, make_scope, error)
            if failure_error is not None:
                self._failure(f"{level} {name}: failure handler failed: {failure_error}")
        finish_error = self._fire(level, name, events, Event.FINISH, make_scope, error)
        if finish_error is not None:
            error = self._failure(f"{level} {name}: finish handler failed: {finish_error}")
        return error is None

    def _failure(self, message: str) -> str:
        self.report.failures.append(message)
        return message

    def _fire(
        self,
        level: str,
        name: str,
        events: Events,
        event: Event,
        make_scope: Callable[[Event, str | None], Scope],
        error: str | None,
    ) -> str | None:
        if not events.of(event):
            return None
        self.log(f"{level} {name}: {event.value}")
        failure = fire(events, event, make_scope(event, error))
        self.report.events.append(EventRecord(level, name, event.value, failure))
        return failure
