"""A scripted OpenAI-compatible chat-completions server on loopback, for plumbing tests."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

Responder = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]


def completion(content: str, *, model: str = "scripted", finish_reason: str = "stop") -> dict[str, Any]:
    """A chat.completion body whose message content is ``content``."""
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "finish_reason": finish_reason, "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def _entry(token: str, logprob: float, alternatives: dict[str, float] | None = None) -> dict[str, Any]:
    tops = alternatives if alternatives is not None else {token: logprob}
    return {
        "token": token,
        "logprob": logprob,
        "bytes": list(token.encode()),
        "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in tops.items()],
    }


def routing_answer(
    assignee_id: str,
    confidence: float = 0.9,
    *,
    alternative: str = "self",
    grammar: bool = False,
    logprobs: bool = True,
    generated_confidence: float | None = None,
    reasoning: str | None = None,
    more_alternatives: dict[str, float] | None = None,
) -> tuple[int, dict]:
    """A 200 response carrying a label-first answer, and log-probabilities that give the id ``confidence``.

    ``more_alternatives``: more ids reported at the id's token, with their probabilities (the
    renormalised probability then takes them into account).

    The rest of the probability goes to ``alternative`` (another candidate's id), so the
    renormalised probability over the candidates is ``confidence`` when both are candidates.
    ``grammar``: the bare id (llama.cpp grammar) instead of the one-key JSON object.
    """
    other = alternative if alternative != assignee_id else "finance-manager"
    id_alternatives = {assignee_id: math.log(confidence)}
    if confidence < 1.0:
        id_alternatives[other] = math.log(1.0 - confidence)
    id_alternatives |= {token: math.log(p) for token, p in (more_alternatives or {}).items()}
    if grammar:
        content = assignee_id if reasoning is None else f"{assignee_id} - {reasoning}"
        tokens = [_entry(assignee_id, math.log(confidence), id_alternatives)]
        if reasoning is not None:
            tokens.append(_entry(f" - {reasoning}", 0.0))
    else:
        answer: dict[str, Any] = {"assignee_id": assignee_id}
        if generated_confidence is not None:
            answer["confidence"] = generated_confidence
        if reasoning is not None:
            answer["reasoning"] = reasoning
        content = json.dumps(answer)
        head, tail = content.split(json.dumps(assignee_id), 1)
        tokens = [_entry(head + '"', 0.0), _entry(assignee_id, math.log(confidence), id_alternatives)]
        tokens.append(_entry('"' + tail, 0.0))
    body = completion(content)
    if logprobs:
        body["choices"][0]["logprobs"] = {"content": tokens}
    return 200, body


def error(status: int, message: str = "scripted failure") -> tuple[int, dict]:
    return status, {"error": {"message": message, "type": "server_error", "code": status}}


def last_user_text(request: dict[str, Any]) -> str:
    """The content of the last user message in a chat request."""
    for message in reversed(request.get("messages", [])):
        if message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


class ScriptedOpenAI:
    """Serves /v1/chat/completions from a responder function; records every request body."""

    def __init__(self, responder: Responder, *, on_sent: Callable[[dict[str, Any]], None] | None = None) -> None:
        """``on_sent`` runs after a completion's response was written to the socket (e.g. to kill the caller)."""
        self.responder = responder
        self.on_sent = on_sent
        self.requests: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                outer.paths.append(self.path)
                if self.path.endswith("/chat/completions"):
                    outer.requests.append(body)
                    outer.headers.append(dict(self.headers))
                    status, payload = outer.responder(body)
                else:
                    # Not a completion (e.g. llama.cpp's /slots actions): recorded by path only.
                    status, payload = 404, {"error": {"message": f"no route {self.path}"}}
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    return  # the caller is gone (killed, or timed out): what fault tests make happen
                if outer.on_sent is not None and self.path.endswith("/chat/completions"):
                    outer.on_sent(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
