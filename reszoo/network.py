"""Bounded, explained network calls to the Hugging Face Hub.

huggingface_hub retries on its own, in several places and with long waits: a failed metadata
lookup (HEAD) of an uncached file is tried again with a 60 s timeout and five retries, sleeping
1+2+4+8+8 s between them (half a minute per file on a machine without network, minutes against
a server that never answers); a broken download resumes up to five times, a second apart; a 5xx
answer to a download is raised as a traceback. Inside :func:`guarded`, reszoo's Hub calls go
differently: every wait on the network is bounded by ``RESZOO_HUB_TIMEOUT`` seconds (default 10;
connecting by at most 3 s), and the first failure of a request (no connection, no answer in time,
a 5xx answer, a connection closed mid-way) is raised at once as a :class:`TransferFailure`,
which huggingface_hub's retry loops do not catch. The caller decides: :func:`retry_once` tries a
transient failure once more, :func:`hub_download` falls back to a cached copy, and
:func:`download_error` / :func:`push_error` turn what happened into one-line :class:`HubError`
messages that name the endpoint, the status and what to do.

The mechanism is a wrapper around ``send`` of huggingface_hub's shared HTTP client
(``huggingface_hub.get_session()``, an ``httpx2.Client`` in huggingface_hub 2.x). It changes nothing
outside :func:`guarded` (other threads and other callers see the client as it was), and it is
re-applied when huggingface_hub replaces its client. Downloads through hf_xet do not go through
this client; reszoo's tests and pushes use plain HTTP.
"""

from __future__ import annotations

import contextvars
import errno
import functools
import logging
import os
import socket
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .errors import HubError, NotCachedError

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "TransferFailure",
    "download_error",
    "guarded",
    "hub_call",
    "hub_download",
    "hub_timeout",
    "push_error",
    "retry_once",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_TIMEOUT_S = 10.0
# A reachable Hub completes a TCP handshake well within this; a firewall that silently drops
# packets should not cost a whole read timeout per file.
CONNECT_TIMEOUT_S = 3.0
RETRY_PAUSE_S = 1.0
MIRROR_HINT = "fill a mirror on a connected machine with `reszoo pull NAME --to DIR` (or copy the file to {path}), then set RESZOO_MIRROR=DIR"

_POLICY: contextvars.ContextVar[float | None] = contextvars.ContextVar("reszoo_hub_timeout", default=None)


def hub_timeout() -> float:
    """Seconds any one wait on the Hub may take: ``$RESZOO_HUB_TIMEOUT``, else 10."""
    raw = os.environ.get("RESZOO_HUB_TIMEOUT", "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise HubError(f"RESZOO_HUB_TIMEOUT must be a number of seconds > 0, got {raw!r}")
    return value


# --------------------------------------------------------------------------- failures


class TransferFailure(Exception):
    """A Hub request that failed inside :func:`guarded`, raised in place of huggingface_hub's retries.

    ``kind``: ``"unreachable"`` (no connection: refused, no route, name not resolved, no handshake in
    time), ``"timeout"`` (connected, then no answer or no data in time), ``"status"`` (a 5xx answer),
    ``"reset"`` (the connection closed before an answer) or ``"cut"`` (closed in the middle of the body).
    """

    def __init__(self, kind: str, *, method: str, url: str, reason: str = "", status: int | None = None,
                 timeout: float | None = None, received: int | None = None, expected: int | None = None) -> None:
        self.kind, self.method, self.url, self.reason, self.status = kind, method, url, reason, status
        self.timeout, self.received, self.expected = timeout, received, expected
        self.attempts = 1
        super().__init__(f"{method} {url}: {self.summary}")

    @property
    def retryable(self) -> bool:
        """Whether trying again soon may work: a server error or a broken connection, not a dead or silent Hub."""
        return self.kind in ("status", "reset", "cut")

    @property
    def summary(self) -> str:
        if self.kind == "status":
            return f"HTTP {self.status}" + (f" ({self.reason})" if self.reason else "")
        if self.kind == "timeout":
            return f"no answer within {self.timeout:g} s"
        if self.kind == "cut":
            of = f" of {self.expected}" if self.expected is not None else ""
            return f"connection closed after {self.received}{of} bytes ({self.reason})"
        return self.reason


def _chain(err: BaseException) -> Iterator[BaseException]:
    """``err`` and its causes: httpx wraps httpcore's error, which wraps the OS error; huggingface_hub
    wraps upload errors in RuntimeError."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _why(err: BaseException) -> str:
    """A short reason for a connection error, from the OS error at the bottom of httpx's chain."""
    for cause in _chain(err):
        if isinstance(cause, socket.gaierror):
            return f"host name not resolved: {cause.strerror or cause}"
        if isinstance(cause, OSError) and cause.errno in (errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH,
                                                          errno.ECONNRESET, errno.ETIMEDOUT):
            return os.strerror(cause.errno).lower()
    return (" ".join(str(err).split()) or type(err).__name__)[:200]


def _failure(err: Exception, method: str, url: str, timeout: float, *, received: int | None = None,
             expected: int | None = None) -> TransferFailure:
    """The TransferFailure for an httpx2 transport error (``received`` is set once the body was being read)."""
    import httpx2

    if isinstance(err, httpx2.ConnectTimeout):
        return TransferFailure("unreachable", method=method, url=url,
                               reason=f"no answer to connecting within {min(timeout, CONNECT_TIMEOUT_S):g} s")
    if isinstance(err, httpx2.TimeoutException):
        return TransferFailure("timeout", method=method, url=url, timeout=timeout, received=received)
    if isinstance(err, (httpx2.ConnectError, httpx2.ProxyError, httpx2.UnsupportedProtocol)):
        return TransferFailure("unreachable", method=method, url=url, reason=_why(err))
    reason = _why(err)
    if received is not None:
        return TransferFailure("cut", method=method, url=url, reason=reason, received=received, expected=expected)
    return TransferFailure("reset", method=method, url=url, reason=reason)


def _server_message(response: Any) -> str:
    """The Hub's own one-line explanation of an error answer, if it gave one."""
    text = response.headers.get("X-Error-Message", "")
    if not text and response.is_stream_consumed:
        try:
            text = str(response.json().get("error", ""))
        except (ValueError, AttributeError):  # not a JSON object: the status says enough
            text = ""
    return " ".join(text.split())[:200]


# --------------------------------------------------------------------------- the guarded client


@functools.cache
def _guarded_stream_class() -> type:
    import httpx2

    class GuardedStream(httpx2.SyncByteStream):
        """A response body whose read errors become TransferFailures (counting the bytes received)."""

        def __init__(self, inner: Any, method: str, url: str, timeout: float, expected: int | None) -> None:
            self._inner, self._method, self._url, self._timeout, self._expected = inner, method, url, timeout, expected

        def __iter__(self) -> Iterator[bytes]:
            received = 0
            try:
                for chunk in self._inner:
                    received += len(chunk)
                    yield chunk
            except httpx2.TransportError as err:
                raise _failure(err, self._method, self._url, self._timeout, received=received,
                               expected=self._expected) from err

        def close(self) -> None:
            self._inner.close()

        @property
        def elapsed(self) -> Any:
            return getattr(self._inner, "elapsed", None)

    return GuardedStream


def _guarded_send(client: Any, request: Any, **kwargs: Any) -> Any:
    """``client.send`` (httpx2), bounded and failing fast while :func:`guarded` is active in this thread."""
    send = type(client).send
    timeout = _POLICY.get()
    if timeout is None:
        return send(client, request, **kwargs)
    import httpx2

    # huggingface_hub passes its own timeouts (10 s, 60 s, or none for API calls): ours replace them.
    bounds = httpx2.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_S))
    request.extensions = {**request.extensions, "timeout": bounds.as_dict()}
    method, url = request.method, str(request.url)
    try:
        response = send(client, request, **kwargs)
    except httpx2.TransportError as err:
        raise _failure(err, method, url, timeout) from err
    if response.status_code >= 500:
        reason = _server_message(response)
        response.close()
        raise TransferFailure("status", method=method, url=url, status=response.status_code, reason=reason)
    if kwargs.get("stream"):
        length = response.headers.get("Content-Length", "")
        expected = int(length) if length.isdigit() else None
        response.stream = _guarded_stream_class()(response.stream, method, url, timeout, expected)
    return response


def _guard_session() -> None:
    """Wrap ``send`` of huggingface_hub's shared client (again, if it made a new one since)."""
    from huggingface_hub import get_session

    client = get_session()
    if getattr(client.send, "__func__", None) is not _guarded_send:
        client.send = types.MethodType(_guarded_send, client)


@contextmanager
def guarded(timeout: float | None = None) -> Iterator[float]:
    """Within this block (in this thread), reszoo's Hub calls wait at most ``timeout`` seconds
    (default :func:`hub_timeout`) on the network and raise :class:`TransferFailure` on the first
    failure instead of retrying; yields the timeout."""
    seconds = hub_timeout() if timeout is None else timeout
    _guard_session()
    token = _POLICY.set(seconds)
    try:
        yield seconds
    finally:
        _POLICY.reset(token)


def retry_once(call: Callable[[], T], *, pause: float = RETRY_PAUSE_S) -> T:
    """``call()`` inside :func:`guarded`, tried once more after ``pause`` seconds when it failed in a
    way a second try can fix (a 5xx answer, a connection closed before or during the answer).
    Only for idempotent calls: downloads and lookups, never a commit."""
    with guarded():
        try:
            return call()
        except TransferFailure as failure:
            if not failure.retryable:
                raise
            logger.info("%s; trying once more", failure)
        time.sleep(pause)
        try:
            return call()
        except TransferFailure as failure:
            failure.attempts = 2
            raise


def hub_download(repo_id: str, filename: str, *, revision: str | None = None, **kwargs: Any) -> str:
    """``huggingface_hub.hf_hub_download``, bounded and retried once (:func:`retry_once`); when the
    Hub fails, a copy already in the cache is used instead (as huggingface_hub does when it cannot
    reach the Hub), else the :class:`TransferFailure` is raised."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return retry_once(lambda: hf_hub_download(repo_id=repo_id, filename=filename, revision=revision, **kwargs))
    except TransferFailure as failure:
        error = failure
    try:  # no network here: only the cache is read
        path = hf_hub_download(repo_id=repo_id, filename=filename, revision=revision, local_files_only=True, **kwargs)
    except EntryNotFoundError:  # includes LocalEntryNotFoundError: not cached
        path = None
    if path is None:
        raise error
    logger.info("%s; using the cached copy %s", error, path)
    return path


# --------------------------------------------------------------------------- messages


def _where(url: str) -> str:
    """ "the Hub at <endpoint>", or the host a Hub redirected to (a CDN, a storage bucket)."""
    from huggingface_hub import constants

    endpoint = constants.ENDPOINT.rstrip("/")
    if url == endpoint or url.startswith(endpoint + "/"):
        return f"the Hub at {endpoint}"
    parts = urlsplit(url)
    return f"the Hub's file host {parts.scheme}://{parts.netloc}"


def _operation(method: str, url: str) -> str:
    """What a Hub request was for, in words."""
    path = urlsplit(url).path
    for marker, name in (("/api/repos/create", "repo creation"), ("/preupload/", "preupload"),
                         ("/commit/", "commit"), ("/info/lfs/objects/batch", "LFS batch request"),
                         ("/resolve/", "download" if method == "GET" else "file lookup")):
        if marker in path:
            return name
    return "upload" if method == "PUT" else f"{method} {path}"


def _in_chain(err: BaseException, kind: type[BaseException] | tuple[type[BaseException], ...]) -> Any:
    """The first exception of type ``kind`` among ``err`` and its causes."""
    return next((cause for cause in _chain(err) if isinstance(cause, kind)), None)


def _detail(http: Any) -> str:
    """ " (<the Hub's message>)" of an HfHubHTTPError, on one short line; "" without one."""
    text = " ".join(str(getattr(http, "server_message", None) or "").split())[:200]
    return f" ({text})" if text else ""


def _tries(failure: TransferFailure) -> str:
    return "twice" if failure.attempts > 1 else "once"


def download_error(err: BaseException, repo: str, filename: str, revision: str | None = None) -> HubError | None:
    """The one-line HubError for a failed Hub download of ``repo``'s ``filename``, or None when
    ``err`` is not a network or Hub failure."""
    from huggingface_hub.errors import FileMetadataError, HfHubHTTPError

    what = f"{repo}/{filename}" + (f"@{revision}" if revision else "")
    mirror = "use a mirror (`reszoo pull NAME --to DIR` where the Hub works, then RESZOO_MIRROR=DIR)"
    if (failure := _in_chain(err, TransferFailure)) is not None:
        where = _where(failure.url)
        if failure.kind == "unreachable":
            return NotCachedError(f"{what} is not cached and {where} could not be reached ({failure.reason}); "
                                  f"{MIRROR_HINT.format(path=f'DIR/{repo}/{filename}')}; "
                                  "with HF_HUB_OFFLINE=1 cached files are used without trying the Hub")
        if failure.kind == "timeout":
            sent = f"{failure.received} bytes of the file" if failure.received else "the headers"
            partial = "" if failure.received is None else f" (it sent {sent}, then nothing)"
            return HubError(f"{where} did not answer within {failure.timeout:g} s for {what}{partial}; retry, raise "
                            f"RESZOO_HUB_TIMEOUT for a slow link, or {mirror}")
        if failure.kind == "status":
            detail = f" ({failure.reason})" if failure.reason else ""
            return HubError(f"{where} answered HTTP {failure.status} for {what}{detail}, tried {_tries(failure)}: an "
                            f"error on the Hub's side; retry later, or {mirror}")
        if failure.kind == "cut":
            of = f" of {failure.expected}" if failure.expected is not None else ""
            return HubError(f"the download of {what} from {where} was cut off after {failure.received}{of} bytes, "
                            f"tried {_tries(failure)}; no partial file was kept in the cache: retry")
        return HubError(f"{where} closed the connection without answering for {what} ({failure.reason}), tried "
                        f"{_tries(failure)}; retry later")
    if (http := _in_chain(err, HfHubHTTPError)) is not None and http.response is not None:
        status, url = http.response.status_code, str(http.response.request.url)
        todo = {401: "log in with `hf auth login` (or set HF_TOKEN)", 403: "check that your token may read this repo",
                429: "the Hub is rate-limiting you: retry later, or log in with `hf auth login`"}.get(status, "retry later")
        return HubError(f"{_where(url)} answered HTTP {status} for {what}{_detail(http)}; {todo}, or {mirror}")
    if (meta := _in_chain(err, FileMetadataError)) is not None:
        from huggingface_hub import constants

        return HubError(f"the server at {constants.ENDPOINT} does not answer like a Hugging Face Hub for {what} "
                        f"({' '.join(str(meta).split())[:160]}); check HF_ENDPOINT and any proxy")
    return None


def push_error(err: BaseException, repo_id: str) -> HubError | None:
    """The one-line HubError for a failed push to ``repo_id``, or None when ``err`` is not a network
    or Hub failure."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    head = f"push to {repo_id} failed"
    if (failure := _in_chain(err, TransferFailure)) is not None:
        where, op = _where(failure.url), _operation(failure.method, failure.url)
        if failure.kind == "unreachable":
            return HubError(f"{head}: {where} could not be reached ({failure.reason}); check the network and HF_ENDPOINT")
        if failure.kind == "timeout":
            return HubError(f"{head}: {where} did not answer within {failure.timeout:g} s on {op}; retry, or raise "
                            "RESZOO_HUB_TIMEOUT for a slow link")
        if failure.kind == "status":
            detail = f" ({failure.reason})" if failure.reason else ""
            return HubError(f"{head}: {where} answered HTTP {failure.status} on {op}{detail}; retry later")
        return HubError(f"{head}: {where} closed the connection during {op} ({failure.reason}); retry")
    if (http := _in_chain(err, HfHubHTTPError)) is not None and http.response is not None:
        status, method, url = http.response.status_code, http.response.request.method, str(http.response.request.url)
        todo = {401: "; log in with `hf auth login` (or pass token=)",
                403: "; check that your token may write to this repo"}.get(status, "")
        return HubError(f"{head}: {_where(url)} answered HTTP {status} on {_operation(method, url)}{_detail(http)}{todo}")
    if _in_chain(err, OfflineModeIsEnabled) is not None:
        return HubError(f"{head}: HF_HUB_OFFLINE is set; unset it to push")
    return None


@contextmanager
def hub_call(repo: str) -> Iterator[None]:
    """Bounded Hub calls of ``reszoo publish``; failures as one-line HubErrors naming the repo."""
    try:
        with guarded():
            yield
    except HubError:
        raise
    except Exception as err:
        if (error := push_error(err, repo)) is None:
            raise
        raise type(error)(f"publish: {error}") from err
