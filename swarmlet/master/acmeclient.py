"""ACME (RFC 8555) requests, with certbot's ``acme`` library: blocking, so always in a thread.

Why ``acme``: it is the reference client behind certbot (Let's Encrypt's own),
maintained with the protocol, and it does the JWS signing, nonces (a bad nonce
is retried), the directory and the order life cycle; swarmlet keeps only the
cluster parts (who answers, when, what is stored). The alternatives on PyPI are
thin wrappers or unmaintained. Every function here blocks on the network and
is called through ``asyncio.to_thread`` by ``acme.AcmeManager``; nothing here
touches the event loop, the store or a node.

An order is cut in two around the cluster's part, so no thread ever waits on
the loop:

- ``begin(host)``: account (registered once per cluster, key kept by the
  caller), a new key and CSR for ``host``, a new order, and its http-01
  challenges as ``(token, key authorization)``: the caller sends them to every
  ingress and waits until all say they answer them;
- ``finish(pending)``: tells the CA to validate, polls, finalizes, returns the
  full chain.

Errors are ``AcmeFailure`` with the CA's own words (``reason``: the problem
type and detail, the failed challenge's error) and, for ``rateLimited``, the
``Retry-After`` the CA asked for.

Admin side only (the master); never imported by the agent bundle.
"""

from __future__ import annotations

import datetime
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple

import josepy as jose
from acme import challenges, client, errors, messages
from acme import crypto_util as acme_crypto
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ..shipped.exceptions import SwarmletError
from ..webcerts import new_key_pem

USER_AGENT = "swarmlet-acme"
RATE_LIMITED = "urn:ietf:params:acme:error:rateLimited"


class AcmeFailure(SwarmletError):
    """An ACME step failed; ``reason`` is what the CA said (or why we could not ask it)."""

    def __init__(self, reason: str, *, retry_after: Optional[float] = None,
                 rate_limited: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after       # seconds, as the CA asked
        self.rate_limited = rate_limited


@dataclass
class Pending:
    """An order waiting for its challenges to be answered by every node."""

    host: str
    key_pem: bytes = field(repr=False)
    order: Any
    challenges: List[Tuple[Any, Any]]        # (challenge body, response)
    tokens: List[Tuple[str, str]]            # (token, key authorization) for the ingresses
    account_uri: str = ""


class _Net(client.ClientNetwork):
    """Keeps the ``Retry-After`` of the last error answer (the library drops it)."""

    retry_after: Optional[str] = None

    def _check_response(self, response: Any, content_type: Optional[str] = None) -> Any:
        self.retry_after = response.headers.get("Retry-After")
        return super()._check_response(response, content_type=content_type)


def new_account_key_pem() -> bytes:
    """The cluster's ACME account key: RSA 2048, what every CA accepts."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class AcmeSession:
    """One ACME directory with the cluster's account (blocking: use from a thread)."""

    def __init__(self, directory: str, account_key_pem: bytes, account_uri: str = "",
                 ca_bundle: str = "", email: str = "", timeout: int = 30) -> None:
        self.directory_url = directory
        self.email = email
        self._bundle_path = ""
        verify: Any = True
        if ca_bundle:
            fd, self._bundle_path = tempfile.mkstemp(prefix="swarmlet-acme-ca.", suffix=".pem")
            with os.fdopen(fd, "w") as fh:
                fh.write(ca_bundle)
            verify = self._bundle_path
        key = jose.JWKRSA(key=serialization.load_pem_private_key(account_key_pem, None))
        account = messages.RegistrationResource(uri=account_uri, body=messages.Registration()) \
            if account_uri else None
        self.net = _Net(key, account=account, user_agent=USER_AGENT, verify_ssl=verify,
                        timeout=timeout)
        self.client: Optional[client.ClientV2] = None
        self.account_uri = account_uri

    def close(self) -> None:
        if self._bundle_path:
            try:
                os.unlink(self._bundle_path)
            except OSError:
                pass

    def _failure(self, exc: BaseException, what: str) -> AcmeFailure:
        retry = None
        if self.net.retry_after:
            try:
                retry = float(self.net.retry_after)
            except ValueError:
                retry = None
        if isinstance(exc, messages.Error):
            detail = exc.detail or exc.description or str(exc)
            typ = (exc.typ or "").rsplit(":", 1)[-1]
            return AcmeFailure(f"{what}: {typ}: {detail}" if typ else f"{what}: {detail}",
                               retry_after=retry, rate_limited=exc.typ == RATE_LIMITED)
        if isinstance(exc, errors.ValidationError):
            reasons = []
            for authzr in exc.failed_authzrs:
                for ch in authzr.body.challenges:
                    if ch.error is not None:
                        err = ch.error
                        typ = (err.typ or "").rsplit(":", 1)[-1]
                        reasons.append(f"{ch.chall.typ} for {authzr.body.identifier.value}: "
                                       f"{typ}: {err.detail}")
            return AcmeFailure(f"{what}: the CA could not validate: " + "; ".join(reasons))
        if isinstance(exc, errors.TimeoutError):
            return AcmeFailure(f"{what}: the CA did not finish validating in time")
        return AcmeFailure(f"{what}: {type(exc).__name__}: {exc}")

    def _connect(self) -> client.ClientV2:
        if self.client is None:
            try:
                directory = client.ClientV2.get_directory(self.directory_url, self.net)
            except Exception as exc:  # requests, TLS, JSON: all "cannot reach the CA"
                raise self._failure(exc, f"cannot read the ACME directory {self.directory_url}")
            self.client = client.ClientV2(directory, self.net)
        return self.client

    def ensure_account(self) -> str:
        """Register the cluster's account if it has none yet; its URI."""
        acme = self._connect()
        if self.account_uri:
            return self.account_uri
        reg = messages.NewRegistration.from_data(email=self.email or None,
                                                 terms_of_service_agreed=True)
        try:
            regr = acme.new_account(reg)
        except errors.ConflictError as exc:       # the key has an account already
            regr = acme.query_registration(messages.RegistrationResource(
                uri=exc.location, body=messages.Registration()))
        except Exception as exc:
            raise self._failure(exc, "cannot register the ACME account")
        self.net.account = regr
        self.account_uri = regr.uri
        return regr.uri

    def begin(self, host: str) -> Pending:
        self.ensure_account()
        acme = self._connect()
        key_pem = new_key_pem()
        csr = acme_crypto.make_csr(key_pem, [host])
        try:
            order = acme.new_order(csr)
        except Exception as exc:
            raise self._failure(exc, f"cannot order a certificate for {host}")
        picked: List[Tuple[Any, Any]] = []
        tokens: List[Tuple[str, str]] = []
        for authz in order.authorizations:
            if authz.body.status == messages.STATUS_VALID:
                continue                          # validated recently: nothing to answer
            for challb in authz.body.challenges:
                if isinstance(challb.chall, challenges.HTTP01):
                    response, validation = challb.response_and_validation(self.net.key)
                    picked.append((challb, response))
                    tokens.append((challb.chall.encode("token"), validation))
                    break
            else:
                raise AcmeFailure(f"the CA offers no http-01 challenge for {host}")
        return Pending(host, key_pem, order, picked, tokens, self.account_uri)

    def finish(self, pending: Pending, timeout: float = 90.0) -> str:
        """Trigger the challenges, wait for validation and issuance; the PEM full chain."""
        acme = self._connect()
        try:
            for challb, response in pending.challenges:
                acme.answer_challenge(challb, response)
            deadline = datetime.datetime.now() + datetime.timedelta(seconds=timeout)
            done = acme.poll_and_finalize(pending.order, deadline)
        except Exception as exc:
            raise self._failure(exc, f"certificate for {pending.host}")
        if not done.fullchain_pem:
            raise AcmeFailure(f"certificate for {pending.host}: the CA sent no certificate")
        return done.fullchain_pem
