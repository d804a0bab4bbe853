"""The DEMO PKI's online services over HTTP: an RFC 3161 time-stamp authority and an OCSP
responder (RFC 6960), for the tests and the development server.

The protocol work is certomancer's (``certomancer.services``: ``TimeStamper`` builds the
time-stamp tokens, ``SimpleOCSPResponder`` the OCSP responses); this module only serves them with
werkzeug on a loopback port, under the demo root of ``dispatch.signing.demo``, and keeps the
services' keys parsed (``_KeptKeys``), as a real TSA or responder keeps its key loaded:

- ``POST /tsa`` (``application/timestamp-query``): a token signed with the demo TSA's key;
- ``POST /ocsp`` (``application/ocsp-request``) or ``GET /ocsp/<base64>``: the status of a
  certificate the demo root issued, signed by the root itself; "revoked" for the serial numbers
  in ``revoked``, "unknown" for any other issuer's certificate.

The certificates must name the responder's address, and the port is only known once the server
is listening, so the server starts first and the PKI is attached to it after::

    services = DemoServices.start()
    pki = make_pki(folder, services_url=services.url)
    services.attach(pki)
    ...
    services.stop()

Nothing here is trusted by anyone else: it answers for DEMO certificates only.
"""

from __future__ import annotations

import base64
import datetime as dt
import threading
from dataclasses import dataclass, field

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from dispatch.signing.demo import Pki


def _asn1_key(key):
    from asn1crypto import keys
    from cryptography.hazmat.primitives import serialization

    return keys.PrivateKeyInfo.load(
        key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _asn1_cert(cert):
    from asn1crypto import x509
    from cryptography.hazmat.primitives import serialization

    return x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


@dataclass
class _Answers:
    """What the services need of the PKI, in asn1crypto's terms."""

    root: object
    root_key: object
    tsa_cert: object
    tsa_key: object
    issued: set[int]
    revoked: dict[int, dt.datetime] = field(default_factory=dict)


class _RevocationStatus:
    """certomancer's ``RevocationInfoInterface`` over the demo root's certificates."""

    def __init__(self, answers: _Answers):
        self.answers = answers

    def get_issuer_cert(self):
        return self.answers.root

    def check_revocation_status(self, cid, at_time):
        from asn1crypto import ocsp

        serial = cid["serial_number"].native
        if serial in self.answers.revoked:
            info = ocsp.RevokedInfo(
                {
                    "revocation_time": self.answers.revoked[serial],
                    "revocation_reason": "key_compromise",
                }
            )
            return ocsp.CertStatus(name="revoked", value=info), []
        if serial not in self.answers.issued:
            return ocsp.CertStatus(name="unknown", value=None), []
        return ocsp.CertStatus(name="good", value=None), []


class _KeptKeys:
    """certomancer's crypto backend, signing with each private key parsed once.

    certomancer parses the key's DER again for every signature it makes, and ``cryptography``
    checks an RSA key anew each time it parses one: some 35 ms for a 2048-bit key, for every
    time-stamp and every OCSP answer, where the signature itself takes 1 ms. RSA PKCS#1 v1.5 (what
    the demo keys sign with) is signed with the key parsed the first time; anything else goes to
    the backend this one replaced. Installed in place of certomancer's ``CRYPTO_BACKEND``, which
    its ``generic_sign`` reads at each call, by ``install``.
    """

    def __init__(self, backend):
        self._backend = backend
        self._parsed: dict[bytes, object] = {}
        self._lock = threading.Lock()

    @classmethod
    def install(cls) -> None:
        from certomancer import crypto_utils

        if not isinstance(crypto_utils.CRYPTO_BACKEND, cls):
            crypto_utils.CRYPTO_BACKEND = cls(crypto_utils.CRYPTO_BACKEND)

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def generic_sign(self, private_key, tbs_bytes: bytes, sd_algo) -> bytes:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding, rsa

        if sd_algo.signature_algo != "rsassa_pkcs1v15":
            return self._backend.generic_sign(private_key, tbs_bytes, sd_algo)
        der = private_key.dump()
        with self._lock:
            key = self._parsed.get(der)
            if key is None:
                key = self._parsed[der] = serialization.load_der_private_key(der, password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            return self._backend.generic_sign(private_key, tbs_bytes, sd_algo)
        digest = getattr(hashes, sd_algo.hash_algo.upper())()
        return key.sign(tbs_bytes, padding.PKCS1v15(), digest)


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code="-", size="-") -> None:
        pass  # ``requests`` keeps what was answered; no line per request on the console


class DemoServices:
    """The demo TSA and OCSP responder, listening on ``host`` (loopback) in a thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        _KeptKeys.install()
        self._answers: _Answers | None = None
        self._server = make_server(
            host, port, self._wsgi, threaded=True, request_handler=_QuietHandler
        )
        self.url = f"http://{host}:{self._server.server_port}"
        self.requests: list[str] = []  # "tsa" / "ocsp", as they were answered
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="demo-tsa-ocsp", daemon=True
        )

    @classmethod
    def start(cls, host: str = "127.0.0.1", port: int = 0) -> DemoServices:
        services = cls(host, port)
        services._thread.start()
        return services

    def attach(self, pki: Pki) -> None:
        """Answer for ``pki`` (made with ``services_url=self.url``)."""
        if pki.tsa is None or pki.root_key is None:
            raise ValueError("the PKI has no TSA certificate or root key")
        self._answers = _Answers(
            root=_asn1_cert(pki.root),
            root_key=_asn1_key(pki.root_key),
            tsa_cert=_asn1_cert(pki.tsa.cert),
            tsa_key=_asn1_key(pki.tsa.key),
            issued={identity.cert.serial_number for identity in (pki.leader, pki.agency, pki.tsa)},
        )

    def revoke(self, serial: int, at: dt.datetime) -> None:
        """From now on, answer that the certificate ``serial`` was revoked at ``at``."""
        assert self._answers is not None
        self._answers.revoked[serial] = at

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # --- HTTP ----------------------------------------------------------------------------

    def _wsgi(self, environ, start_response):
        request = Request(environ)
        try:
            response = self._answer(request)
        except Exception:  # a malformed request: say so, keep serving
            response = Response("bad request", status=400)
        return response(environ, start_response)

    def _answer(self, request: Request) -> Response:
        if self._answers is None:
            return Response("no PKI attached", status=503)
        path = request.path.rstrip("/")
        if path == "/tsa" and request.method == "POST":
            return self._timestamp(request.get_data())
        if path == "/ocsp" and request.method == "POST":
            return self._ocsp(request.get_data())
        if path.startswith("/ocsp/") and request.method == "GET":
            return self._ocsp(base64.b64decode(path[len("/ocsp/") :]))
        return Response("not found", status=404)

    def _timestamp(self, body: bytes) -> Response:
        from asn1crypto import tsp
        from certomancer.services import TimeStamper

        answers = self._answers
        stamper = TimeStamper(answers.tsa_cert, answers.tsa_key, certs_to_embed=[answers.root])
        reply = stamper.request_tsa_response(tsp.TimeStampReq.load(body))
        self.requests.append("tsa")
        return Response(reply.dump(), mimetype="application/timestamp-reply")

    def _ocsp(self, body: bytes) -> Response:
        from asn1crypto import ocsp
        from certomancer.services import SimpleOCSPResponder, choose_signed_digest

        answers = self._answers
        responder = SimpleOCSPResponder(
            responder_cert=answers.root,
            responder_key=answers.root_key,
            signature_algo=choose_signed_digest("sha256", answers.root.public_key),
            at_time=dt.datetime.now(dt.UTC).replace(microsecond=0),
            revinfo_interface=_RevocationStatus(answers),
        )
        reply = responder.build_ocsp_response(ocsp.OCSPRequest.load(body))
        self.requests.append("ocsp")
        return Response(reply.dump(), mimetype="application/ocsp-response")
