"""pyHanko's HTTP clients (the TSA's, and the OCSP/CRL fetchers that make a signature B-LT),
with one TLS context for the whole process.

pyHanko opens a new aiohttp session for each time-stamp request and for each signature's
fetching, and each new session builds a TLS context from certifi's bundle of roots: about 15 ms
of parsing some 150 certificates, every time, even for an ``http://`` address that never uses
it. Issuing a letter signed B-LT asked for it three times. Here the context is built once, on
first use, with the same roots (``tls_context``); each session is still new, bound to the event
loop of the request that made it and closed after it, as pyHanko's own are.

- ``fetcher_backend``: the fetching of one validation context, on a ``SharedTlsSession`` (pyHanko's
  ``LazySession`` with that context), handed over to the context, which closes it when its
  operation is over.
- ``TimeStamper``: pyHanko's ``HTTPTimeStamper``, each request on a session of its own with that
  context, closed after the answer.
"""

from __future__ import annotations

import contextvars
import functools
import ssl
import threading

import aiohttp
from pyhanko.sign.timestamps import HTTPTimeStamper
from pyhanko_certvalidator.fetchers import OwnedFetcherBackend
from pyhanko_certvalidator.fetchers.aiohttp_fetchers import AIOHttpFetcherBackend
from pyhanko_certvalidator.fetchers.aiohttp_fetchers.util import LazySession

_TLS_LOCK = threading.Lock()


@functools.cache
def _made_tls_context() -> ssl.SSLContext:
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def tls_context() -> ssl.SSLContext:
    """The TLS context pyHanko's sessions verify servers with (certifi's roots), made once, by
    the first of threads that ask at the same time; an ``SSLContext`` may be shared by any
    number of connections, threads and event loops."""
    with _TLS_LOCK:
        return _made_tls_context()


class SharedTlsSession(LazySession):
    """A lazy aiohttp session whose connector uses ``tls_context``."""

    def get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls_context()))
        return self._session


def fetcher_backend() -> OwnedFetcherBackend:
    """OCSP, CRL and certificate fetching for one ``ValidationContext`` (its ``fetcher_backend``),
    on a ``SharedTlsSession``; owned by the context, which closes it when its operation is over,
    as it closes the backend it makes when given none."""
    return OwnedFetcherBackend(AIOHttpFetcherBackend(session=SharedTlsSession()))


# The session of the time-stamp request running in this task (``TimeStamper``).
_REQUEST_SESSION: contextvars.ContextVar[SharedTlsSession] = contextvars.ContextVar(
    "dispatch_tsa_session"
)


class _RequestSession(LazySession):
    """What ``TimeStamper`` hands pyHanko as its session: the one its running request opened."""

    def get_session(self) -> aiohttp.ClientSession:
        return _REQUEST_SESSION.get().get_session()

    async def close(self) -> None:
        pass  # each request's own session is closed by the request


class TimeStamper(HTTPTimeStamper):
    """pyHanko's RFC 3161 client over HTTP, each request on a new session with ``tls_context``.

    One client serves many signatures, from any thread and any event loop: the session is the
    request's (a context variable, so concurrent requests never share one), made when it starts
    and closed when it ends.
    """

    def __init__(self, url: str, timeout: float):
        super().__init__(url, timeout=timeout, session=_RequestSession())

    async def async_request_tsa_response(self, req):
        session = SharedTlsSession()
        token = _REQUEST_SESSION.set(session)
        try:
            return await super().async_request_tsa_response(req)
        finally:
            _REQUEST_SESSION.reset(token)
            await session.close()
