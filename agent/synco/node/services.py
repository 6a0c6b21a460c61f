"""The gRPC services an agent serves: Peer (other agents) and Control (synco-ctl) (adapter)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer  # what health.aio names, visible to mypy

from synco.core.election import Request
from synco.node.election_link import from_handover_message, from_vote_request, renewal_of, vote_reply
from synco.node.node import Node
from synco.node.tls import caller
from synco.v1 import control_pb2, control_pb2_grpc, peer_pb2, peer_pb2_grpc


class PeerService(peer_pb2_grpc.PeerServicer):
    def __init__(self, node: Node) -> None:
        self.node = node

    async def SendHeartbeat(
        self,
        request: peer_pb2.Heartbeat,
        context: grpc.aio.ServicerContext[peer_pb2.Heartbeat, peer_pb2.HeartbeatReply],
    ) -> peer_pb2.HeartbeatReply:
        refused = self.node.authorize(caller(context.auth_context()), request.node)
        if refused is not None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, refused)
        reason = self.node.accept(request)
        if reason is None:
            self.node.record_peer(request)
        granted, refusal = False, ""
        renewal = renewal_of(request) if reason is None and self.node.elector is not None else None
        if renewal is not None:  # the elected master renews its lease: the cycle decides
            try:
                answer = await self.node.election_request(renewal)
            except TimeoutError:
                answer = None
            granted, refusal = (answer.granted, answer.reason) if answer else (False, "no decision in time")
        return peer_pb2.HeartbeatReply(
            self=self.node.heartbeat(),
            accepted=reason is None,
            reason=reason or "",
            lease_granted=granted,
            lease_refusal=refusal,
        )

    async def PreVote(
        self,
        request: peer_pb2.VoteRequest,
        context: grpc.aio.ServicerContext[peer_pb2.VoteRequest, peer_pb2.VoteReply],
    ) -> peer_pb2.VoteReply:
        return await self._vote("pre-vote", request, context)

    async def RequestVote(
        self,
        request: peer_pb2.VoteRequest,
        context: grpc.aio.ServicerContext[peer_pb2.VoteRequest, peer_pb2.VoteReply],
    ) -> peer_pb2.VoteReply:
        return await self._vote("vote", request, context)

    async def _vote(
        self,
        kind: str,
        request: peer_pb2.VoteRequest,
        context: grpc.aio.ServicerContext[peer_pb2.VoteRequest, peer_pb2.VoteReply],
    ) -> peer_pb2.VoteReply:
        """A candidate asks: queued for the cycle, answered once decided (a vote on disk first)."""
        refused = self.node.authorize(caller(context.auth_context()), request.candidate)
        if refused is not None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, refused)
        if request.candidate not in self.node.peers:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{request.candidate!r} is not a peer")
        return await self._decided(from_vote_request(kind, request), context)

    async def _decided(
        self, message: Request, context: grpc.aio.ServicerContext[Any, peer_pb2.VoteReply]
    ) -> peer_pb2.VoteReply:
        """The cycle's answer to a peer's election message (its effects on disk first)."""
        if self.node.elector is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{self.node.me.name} has no automatic failover: {self.node.failover_off}",
            )
        try:
            reply = await self.node.election_request(message)
        except TimeoutError:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no decision in time")
        return vote_reply(reply)

    async def Handover(
        self,
        request: peer_pb2.HandoverMessage,
        context: grpc.aio.ServicerContext[peer_pb2.HandoverMessage, peer_pb2.VoteReply],
    ) -> peer_pb2.VoteReply:
        """A switchover's step (prepare, ready, release): queued for the cycle, answered once decided."""
        sender = request.target if request.step == "ready" else request.master
        refused = self.node.authorize(caller(context.auth_context()), sender)
        if refused is not None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, refused)
        if sender not in self.node.peers or request.step not in ("prepare", "ready", "release"):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"not a handover from a peer: {request.step!r}"
            )
        return await self._decided(from_handover_message(request), context)

    async def Promote(
        self,
        request: peer_pb2.PromoteRequest,
        context: grpc.aio.ServicerContext[peer_pb2.PromoteRequest, peer_pb2.PromoteReply],
    ) -> peer_pb2.PromoteReply:
        """An operator's promote, passed on by the agent it was asked of."""
        refused = self.node.authorize(caller(context.auth_context()), None)
        if refused is not None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, refused)
        if request.force:  # only root on the target itself may force it (its control socket)
            return peer_pb2.PromoteReply(
                refusal="a forced promote is not passed on between agents", answered_by=self.node.me.name
            )
        return await decide_promote(self.node, request)

    async def WatchChanges(
        self,
        request: peer_pb2.WatchRequest,
        context: grpc.aio.ServicerContext[peer_pb2.WatchRequest, peer_pb2.Change],
    ) -> AsyncIterator[peer_pb2.Change]:
        refused = self.node.authorize(caller(context.auth_context()), request.node)
        if refused is not None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, refused)
        if request.node not in self.node.peers:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{request.node!r} is not a peer")
        if not self.node.is_master:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{self.node.me.name} is not the master")
        # since_generation 0, or one this master never reached (it is another master's count, or
        # this master lost its state): the current generation at once; otherwise only newer ones
        since = request.since_generation
        sent = -1 if since == 0 or since > self.node.state.generation else since
        while True:
            async with self.node.changed:
                await self.node.changed.wait_for(
                    lambda sent=sent: self.node.state.generation > sent or not self.node.is_master  # type: ignore[misc]
                )
            if not self.node.is_master:
                await context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION, f"{self.node.me.name} is no longer the master"
                )
            sent = self.node.state.generation
            yield peer_pb2.Change(
                generation=sent,
                epoch=self.node.state.epoch,
                changed_unix_ms=int(self.node.wall() * 1000),
                master=self.node.me.name,
            )

    async def Status(
        self,
        request: peer_pb2.NodeStatusRequest,
        context: grpc.aio.ServicerContext[peer_pb2.NodeStatusRequest, peer_pb2.NodeStatus],
    ) -> peer_pb2.NodeStatus:
        refused = self.node.authorize(caller(context.auth_context()), None)
        if refused is not None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, refused)
        return self.node.status()


async def decide_promote(node: Node, request: peer_pb2.PromoteRequest) -> peer_pb2.PromoteReply:
    if node.elector is None:
        return peer_pb2.PromoteReply(
            refusal=f"automatic failover is off: {node.failover_off}", answered_by=node.me.name
        )
    try:
        return await node.promote_request(request)
    except TimeoutError:
        return peer_pb2.PromoteReply(refusal="no decision in time", answered_by=node.me.name)


class ControlService(control_pb2_grpc.ControlServicer):
    def __init__(self, node: Node) -> None:
        self.node = node

    async def Status(
        self,
        request: control_pb2.ClusterStatusRequest,
        context: grpc.aio.ServicerContext[control_pb2.ClusterStatusRequest, control_pb2.ClusterStatus],
    ) -> control_pb2.ClusterStatus:
        peers = []
        now_ms = int(self.node.wall() * 1000)
        names = list(self.node.peers)
        details = await asyncio.gather(*(self._peer_status(name) for name in names))
        for name, detail in zip(names, details, strict=True):
            view = self.node.peers[name]
            age = None if view.received_at is None else self.node.clock() - view.received_at
            if detail is None and view.heartbeat is not None:
                detail = peer_pb2.NodeStatus(heartbeat=view.heartbeat)  # what its heartbeats said
            peers.append(
                control_pb2.PeerView(
                    node=name,
                    status=detail,
                    last_heartbeat_unix_ms=0 if age is None else now_ms - int(age * 1000),
                    reachable=age is not None and age < 3 * self.node.settings.heartbeat_interval,
                    error=view.error,
                )
            )
        return control_pb2.ClusterStatus(local=self.node.status(), peers=peers)

    async def _peer_status(self, name: str) -> peer_pb2.NodeStatus | None:
        """The peer's own status (last pull, lag), asked with a short deadline; None if it does not answer."""
        stub = peer_pb2_grpc.PeerStub(self.node.channel(self.node.script.server(name)))
        try:
            status = await stub.Status(peer_pb2.NodeStatusRequest(), timeout=1.0)
        except grpc.aio.AioRpcError:
            return None
        beat = status.heartbeat
        if beat.node == name and beat.role == peer_pb2.ROLE_MASTER and beat.master == name:
            self.node.heard_generation(name, beat.generation)  # every source of it counts
        return status

    async def SyncNow(
        self,
        request: control_pb2.SyncNowRequest,
        context: grpc.aio.ServicerContext[control_pb2.SyncNowRequest, control_pb2.SyncNowReply],
    ) -> control_pb2.SyncNowReply:
        node = self.node
        if node.master == node.me.name:
            why = "a backup server named master does nothing" if node.is_backup else "it has nothing to pull"
            return control_pb2.SyncNowReply(verdict=f"{node.me.name} is the master: {why}")
        node.sync_requested = True
        node.wake.set()
        await asyncio.sleep(0)
        return control_pb2.SyncNowReply(verdict="snapshot requested" if node.is_backup else "pull requested")

    async def Pause(
        self,
        request: control_pb2.PauseRequest,
        context: grpc.aio.ServicerContext[control_pb2.PauseRequest, control_pb2.PauseReply],
    ) -> control_pb2.PauseReply:
        self.node.paused = True
        self.node.wake.set()
        return control_pb2.PauseReply(paused=True)

    async def Resume(
        self,
        request: control_pb2.ResumeRequest,
        context: grpc.aio.ServicerContext[control_pb2.ResumeRequest, control_pb2.ResumeReply],
    ) -> control_pb2.ResumeReply:
        self.node.paused = False
        self.node.wake.set()
        return control_pb2.ResumeReply(paused=False)

    async def PauseFailover(
        self,
        request: control_pb2.FailoverPauseRequest,
        context: grpc.aio.ServicerContext[control_pb2.FailoverPauseRequest, control_pb2.FailoverPauseReply],
    ) -> control_pb2.FailoverPauseReply:
        """Pause (or resume) automatic failover cluster-wide: persisted here, then passed on in
        every heartbeat (a node that is down learns it when it is back)."""
        node = self.node
        if node.elector is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, f"automatic failover is off: {node.failover_off}"
            )
        try:
            note = await node.pause_failover(request.paused)
        except TimeoutError:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no decision in time")
        return control_pb2.FailoverPauseReply(paused=node.state.failover_paused, note=note)

    async def Promote(
        self,
        request: peer_pb2.PromoteRequest,
        context: grpc.aio.ServicerContext[peer_pb2.PromoteRequest, peer_pb2.PromoteReply],
    ) -> peer_pb2.PromoteReply:
        """`synco-ctl promote`: decided here, or passed on to the live master (or the target)."""
        node = self.node
        if node.elector is None or request.target not in node.script.server_names:
            return await decide_promote(node, request)
        if request.force and request.target != node.me.name:
            return peer_pb2.PromoteReply(
                refusal=f"run promote --force on {request.target} itself (--as {request.target}): "
                "a forced promote is not passed on between agents",
                answered_by=node.me.name,
            )
        route = node.promote_route(request.target, request.force)
        if route == node.me.name:
            return await decide_promote(node, request)
        stub = peer_pb2_grpc.PeerStub(node.channel(node.script.server(route)))
        try:
            reply: peer_pb2.PromoteReply = await stub.Promote(request, timeout=6.0)
        except grpc.aio.AioRpcError as error:
            if route != request.target and request.target == node.me.name:
                return await decide_promote(node, request)  # the master is gone: this node says why not
            return peer_pb2.PromoteReply(
                refusal=f"cannot reach {route}, which decides: {error.code().name}: {error.details()}",
                answered_by=node.me.name,
            )
        return reply


class AuthorizedHealth(HealthServicer):  # type: ignore[misc]
    """The gRPC health service, answering only peers (as every other call): a certificate of
    the cluster's CA that names no configured server learns nothing."""

    def __init__(self, node: Node) -> None:
        super().__init__()
        self.node = node

    async def _authorize(self, context: grpc.aio.ServicerContext[object, object]) -> None:
        refused = self.node.authorize(caller(context.auth_context()), None)
        if refused is not None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, refused)

    async def Check(
        self,
        request: health_pb2.HealthCheckRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> health_pb2.HealthCheckResponse:
        await self._authorize(context)
        response: health_pb2.HealthCheckResponse = await super().Check(request, context)
        return response

    async def Watch(
        self,
        request: health_pb2.HealthCheckRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> None:
        await self._authorize(context)
        await super().Watch(request, context)
