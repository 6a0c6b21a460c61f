"""The election's messages on the wire: synco.core.election's values to and from the peer
protocol's (adapter)."""

from __future__ import annotations

from synco.core.election import PreVote, Renewal, Reply, Vote
from synco.core.model import Role, Script
from synco.core.ranking import NO_DATA, Position, Standing
from synco.core.switchover import Handover, Promotion
from synco.v1 import peer_pb2


def vote_request(message: PreVote | Vote) -> peer_pb2.VoteRequest:
    return peer_pb2.VoteRequest(
        candidate=message.candidate,
        epoch=message.epoch,
        data_epoch=message.position.epoch,
        data_generation=message.position.generation,
        directed=message.directed,
    )


def from_vote_request(kind: str, request: peer_pb2.VoteRequest) -> PreVote | Vote:
    position = Position(request.data_epoch, request.data_generation)
    if kind == "pre-vote":
        return PreVote(request.candidate, request.epoch, position, request.directed)
    return Vote(request.candidate, request.epoch, position, request.directed)


def handover_message(message: Handover) -> peer_pb2.HandoverMessage:
    return peer_pb2.HandoverMessage(
        master=message.master,
        epoch=message.epoch,
        target=message.target,
        step=message.step,
        data_epoch=message.position.epoch,
        data_generation=message.position.generation,
        ok=message.ok,
        reason=message.reason,
        request=message.request,
    )


def from_handover_message(message: peer_pb2.HandoverMessage) -> Handover:
    return Handover(
        message.master,
        message.epoch,
        message.target,
        message.step,
        Position(message.data_epoch, message.data_generation),
        message.ok,
        message.reason,
        message.request,
    )


def promotion_status(promotion: Promotion | None) -> peer_pb2.Promotion | None:
    if promotion is None:
        return None
    return peer_pb2.Promotion(
        request=promotion.request,
        target=promotion.target,
        steps=list(promotion.steps),
        failed=promotion.failed,
        done=promotion.done,
    )


def vote_reply(reply: Reply) -> peer_pb2.VoteReply:
    return peer_pb2.VoteReply(
        voter=reply.voter, epoch=reply.epoch, granted=reply.granted, reason=reply.reason
    )


def from_vote_reply(kind: str, asked_epoch: int, reply: peer_pb2.VoteReply) -> Reply:
    return Reply(kind, reply.voter, reply.epoch, reply.granted, reply.reason, asked_epoch)


def renewal_of(heartbeat: peer_pb2.Heartbeat) -> Renewal | None:
    """The lease renewal a heartbeat carries, if it carries one."""
    if heartbeat.lease_seconds <= 0:
        return None
    return Renewal(
        heartbeat.node, heartbeat.epoch, heartbeat.lease_seconds, heartbeat.renewal_sent, heartbeat.acting
    )


def renewal_reply(sent: Renewal, reply: peer_pb2.HeartbeatReply) -> Reply:
    return Reply(
        "renewal",
        reply.self.node,
        reply.self.epoch,
        reply.lease_granted,
        reply.lease_refusal,
        sent.epoch,
        sent.sent_at,
    )


def standing_of(script: Script, heartbeat: peer_pb2.Heartbeat, dns_names: str | None) -> Standing:
    """What a peer's heartbeat says of it as a candidate."""
    server = script.server(heartbeat.node)
    if server.role == Role.WITNESS:
        return Standing(server.name, NO_DATA, 0, "a witness holds no data")
    return Standing(
        server.name,
        Position(heartbeat.data_epoch, heartbeat.generation),
        server.priority,
        heartbeat.ineligible,
        dns_names == server.name,
    )
