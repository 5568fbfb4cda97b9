"""MLLP over mutual TLS, with certificates generated at test time by the openssl CLI."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from hub.settings import Settings

from .ingest_helpers import RawClient, adt, msa, running_stack

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed"),
]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=hub-test-ca", cwd=d)
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, cn in (("server", "127.0.0.1"), ("client", "ehr-feed-1")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-out", f"{name}.crt",
                 "-extfile", f"{name}.ext", cwd=d)
    return d


def _client_context(pki: Path, *, with_cert: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if with_cert:
        ctx.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
    return ctx


async def test_mutual_tls(kafka_settings: Callable[..., Settings], pki: Path) -> None:
    settings = kafka_settings(
        mllp_tls_certfile=pki / "server.crt",
        mllp_tls_keyfile=pki / "server.key",
        mllp_tls_client_cafile=pki / "ca.crt",
    )
    async with running_stack(settings) as st:
        assert st.mllp.tls
        client = await RawClient.connect(
            st.mllp.port, ssl=_client_context(pki, with_cert=True), server_hostname="127.0.0.1")
        assert msa(await client.send(adt("TLS1"))) == ("AA", "TLS1")
        await client.close()

        # No client certificate: the handshake (or the first read, with TLS 1.3) fails,
        # and nothing is ACKed.
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            anon = await RawClient.connect(
                st.mllp.port, ssl=_client_context(pki, with_cert=False),
                server_hostname="127.0.0.1")
            await anon.send(adt("TLS2"), timeout=5)
        assert len(await st.read("ehr.hl7v2", min_records=1)) == 1

        # Plain TCP against the TLS port gets nothing either.
        plain = await RawClient.connect(st.mllp.port)
        with pytest.raises((ConnectionError, OSError, TimeoutError)):
            await plain.send(adt("TLS3"), timeout=5)
        await plain.close()


async def test_server_only_tls(kafka_settings: Callable[..., Settings], pki: Path) -> None:
    settings = kafka_settings(mllp_tls_certfile=pki / "server.crt",
                              mllp_tls_keyfile=pki / "server.key")
    async with running_stack(settings) as st:
        client = await RawClient.connect(
            st.mllp.port, ssl=_client_context(pki, with_cert=False), server_hostname="127.0.0.1")
        assert msa(await client.send(adt("TLS4"))) == ("AA", "TLS4")
        await client.close()
