"""Requests that do not parse, and callers that may not ask: refused with one line (adapter).

gRPC would log a corrupt request (bytes that are no protobuf of the method's type) as an
ERROR with a traceback of its own internals, naming no caller. This interceptor parses
the request itself, and refuses a corrupt one with INVALID_ARGUMENT and one WARNING line
naming the caller (its certificate's name, else its address), at most once a minute.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError

from synco.node.tls import caller

if TYPE_CHECKING:  # generic only in the type stubs
    Handler = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]]
    Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    Interceptor = grpc.aio.ServerInterceptor


@dataclass(frozen=True)
class Corrupt:
    """A request that did not parse, with the parser's reason."""

    error: str


def who(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The caller as logs name it: its certificate's name, or its address without one."""
    return caller(context.auth_context()) or context.peer()


class CorruptRequests(Interceptor):
    def __init__(self, refuse: Callable[[str], str]) -> None:
        self.refuse = refuse  # logs (rate-limited) and returns the reason

    async def intercept_service(
        self, continuation: Handler, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler: Any = await continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.request_deserializer is None:
            return handler  # type: ignore[no-any-return]
        method: str = handler_call_details.method
        parse = handler.request_deserializer

        def tolerant(raw: bytes) -> object:
            try:
                return parse(raw)
            except DecodeError as error:
                return Corrupt(str(error))

        async def check(request: object, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            if isinstance(request, Corrupt):
                reason = self.refuse(f"{who(context)} sent a corrupt {method} request: {request.error}")
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, reason)

        if handler.unary_unary is not None:
            unary = handler.unary_unary

            async def unary_unary(request: object, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                await check(request, context)
                return await unary(request, context)

            return handler._replace(request_deserializer=tolerant, unary_unary=unary_unary)  # type: ignore[no-any-return]
        stream = handler.unary_stream
        if inspect.isasyncgenfunction(stream):

            async def generated(
                request: object, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                await check(request, context)
                async for item in stream(request, context):
                    yield item

            return handler._replace(request_deserializer=tolerant, unary_stream=generated)  # type: ignore[no-any-return]

        async def written(request: object, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            await check(request, context)  # a method that writes with context.write()
            await stream(request, context)

        return handler._replace(request_deserializer=tolerant, unary_stream=written)  # type: ignore[no-any-return]
