"""Debian's Postfix as the node: STARTTLS, postscreen, client restrictions, and the probe's manners.

One instance (`mx`, on 127.0.90.1) carries a listener per behaviour, each with its own
syslog_name so its lines in the shared maillog_file are told apart; two more (`b`, `c`)
exist to be stopped. All start in parallel, once for the module.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from r53lb.config import SmtpCheck
from r53lb.probes.base import Target
from r53lb.probes.smtp import probe

from .fleet import HELO, Certs, Zone, time_until
from .servers import Postfix, ResetWatch, wait_for, world_readable_dir

pytestmark = pytest.mark.timeout(120)

MX = "127.0.90.1"
DEEP = {  # postscreen's deep protocol tests: a client must come back after passing them
    "postscreen_pipelining_enable": "yes",
    "postscreen_non_smtp_command_enable": "yes",
    "postscreen_bare_newline_enable": "yes",
}
ENVELOPE = {"from": "<>", "to": "postmaster@mx.interop.test"}


@pytest.fixture(scope="module")
def certs() -> Iterator[Certs]:
    with world_readable_dir("r53lb-certs-") as root:
        yield Certs.make(root, "mx.interop.test", "mx-b.interop.test", "mx-c.interop.test")


@pytest.fixture(scope="module")
def postfix(certs: Certs) -> Iterator[dict[str, Postfix]]:
    with world_readable_dir("r53lb-postfix-") as root:
        yield from _postfix(root, certs)


def _postfix(root: Path, certs: Certs) -> Iterator[dict[str, Postfix]]:
    exempt = root / "postscreen_access.cidr"
    exempt.write_text("# the probe host skips postscreen's tests\n127.0.0.1/32 permit\n")
    cert = (certs.cert_file, certs.key_file)
    main = {
        # INFO logs the HELO name the probe sent, at RCPT time (smtpd_delay_reject=yes, the default).
        "smtpd_helo_restrictions": f"check_helo_access inline:{{{HELO}=INFO}}, reject_non_fqdn_helo_hostname",
        "smtpd_client_event_limit_exceptions": "127.0.0.1",
    }
    instances = {
        "mx": Postfix(root, MX, {
            "healthy": ("smtpd", {}),
            "smtps": ("smtpd", {"smtpd_tls_wrappermode": "yes"}),
            "reject": ("smtpd", {"smtpd_client_restrictions": "reject"}),
            # anvil's connection rate limit, without and with the probe host exempted
            "limited": ("smtpd", {"smtpd_client_connection_rate_limit": "2",
                                  "smtpd_client_event_limit_exceptions": ""}),
            "exempted": ("smtpd", {"smtpd_client_connection_rate_limit": "2"}),
            # postscreen with nothing behind it (its hand-off service does not exist) ...
            "psdead": ("postscreen", {**DEEP, "smtpd_service_name": "nosmtpd",
                                      "postscreen_cache_map": "btree:$data_directory/psdead_cache"}),
            # ... and the documented set-up: the probe host on postscreen_access_list.
            "psexempt": ("postscreen", {**DEEP, "postscreen_access_list": f"permit_mynetworks,cidr:{exempt}"}),
        }, cert=cert, main=main),
        "b": Postfix(root, "127.0.90.2", {"healthy": ("smtpd", {})}, cert=cert, main=main),
        "c": Postfix(root, "127.0.90.3", {"healthy": ("smtpd", {})}, cert=cert, main=main),
    }
    try:
        with ThreadPoolExecutor(len(instances)) as pool:
            list(pool.map(lambda p: p.start(), instances.values()))
        yield instances
    finally:
        for p in instances.values():
            p.stop()


def _probe(pf: Postfix, listener: str, certs: Certs, helo: str = HELO, **options: Any) -> Any:
    spec = SmtpCheck(port=pf.ports[listener], ca_file=certs.ca_file, server_name="mx.interop.test", **options)
    return asyncio.run(probe(Target("mail", listener, pf.host, helo=helo), spec, 5.0))


def _lines(pf: Postfix, listener: str) -> list[str]:
    return [line for line in pf.log().splitlines() if f"postfix/{listener}/" in line]


# --- verdicts ---------------------------------------------------------------------------------


def test_starttls_with_the_envelope_is_healthy(postfix: dict[str, Postfix], certs: Certs) -> None:
    r = _probe(postfix["mx"], "healthy", certs, starttls=True, envelope=ENVELOPE)
    assert r.ok, r.detail
    assert re.match(r"^smtp ok in \d+ ms, STARTTLS, envelope, certificate valid \d+ more days$", r.detail)


def test_implicit_tls_is_healthy(postfix: dict[str, Postfix], certs: Certs) -> None:
    r = _probe(postfix["mx"], "smtps", certs, tls=True, envelope=ENVELOPE)
    assert r.ok, r.detail


def test_a_dotless_helo_is_refused_by_reject_non_fqdn_helo_hostname(postfix: dict[str, Postfix], certs: Certs) -> None:
    r = _probe(postfix["mx"], "healthy", certs, helo="localhost", envelope=ENVELOPE)
    assert not r.ok
    assert r.detail == 'rcpt 504 "5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname"'


def test_client_restrictions_reject_shows_only_with_the_envelope(postfix: dict[str, Postfix], certs: Certs) -> None:
    # smtpd_delay_reject=yes (the default): the greeting and EHLO look fine.
    assert _probe(postfix["mx"], "reject", certs).ok
    r = _probe(postfix["mx"], "reject", certs, envelope=ENVELOPE)
    assert not r.ok
    assert r.detail == 'rcpt 554 "5.7.1 <unknown[127.0.0.1]>: Client host rejected: Access denied"'


def test_postscreen_hides_a_dead_smtpd_until_the_envelope(postfix: dict[str, Postfix], certs: Certs) -> None:
    # postscreen's own stand-in answers the greeting and EHLO: without RCPT it looks healthy.
    assert _probe(postfix["mx"], "psdead", certs).ok
    r = _probe(postfix["mx"], "psdead", certs, envelope=ENVELOPE)
    assert not r.ok
    assert r.detail == 'rcpt 450 "4.3.2 Service currently unavailable"'
    # Having passed the tests, the probe is handed to the smtpd that is not there.
    r = _probe(postfix["mx"], "psdead", certs, envelope=ENVELOPE)
    assert not r.ok and r.detail == 'greeting 421 "4.3.2 All server ports are busy"'


def test_the_probe_host_on_postscreen_access_list_reaches_smtpd(postfix: dict[str, Postfix], certs: Certs) -> None:
    r = _probe(postfix["mx"], "psexempt", certs, envelope=ENVELOPE)
    assert r.ok, r.detail
    log = postfix["mx"].wait_log("postfix/behind-postscreen/smtpd")
    assert re.search(r"postfix/psexempt/postscreen\[\d+\]: ALLOWLISTED \[127\.0\.0\.1\]", log)


def test_rate_limits_spare_the_probe_host_only_when_exempted(postfix: dict[str, Postfix], certs: Certs) -> None:
    # The readiness check already made one connection to each listener.
    limited = [_probe(postfix["mx"], "limited", certs) for _ in range(3)]
    assert [r.ok for r in limited][:1] == [True]
    assert not limited[-1].ok
    assert re.match(r'^greeting 421 "4\.7\.0 mx\.interop\.test Error: too many connections from 127\.0\.0\.1"$',
                    limited[-1].detail), limited[-1].detail
    # smtpd_client_event_limit_exceptions = 127.0.0.1 (main.cf): as many probes as it takes.
    assert all(_probe(postfix["mx"], "exempted", certs).ok for _ in range(4))


# --- manners, as Postfix logs them and as the wire shows them ---------------------------------

ROUNDS = 10


@pytest.mark.parametrize("listener,options,commands", [
    ("healthy", {}, "ehlo=1 mail=1 rcpt=1 rset=1 quit=1 commands=5"),
    ("healthy", {"starttls": True}, "ehlo=2 starttls=1 mail=1 rcpt=1 rset=1 quit=1 commands=7"),
    ("smtps", {"tls": True}, "ehlo=1 mail=1 rcpt=1 rset=1 quit=1 commands=5"),
], ids=["plain", "starttls", "implicit-tls"])
def test_manners_quit_no_lost_connection_no_reset(
    postfix: dict[str, Postfix], certs: Certs, listener: str, options: dict[str, Any], commands: str,
) -> None:
    pf = postfix["mx"]
    before = len(_lines(pf, listener))
    watch = ResetWatch(pf.ports[listener])
    try:
        spec = SmtpCheck(port=pf.ports[listener], ca_file=certs.ca_file, server_name="mx.interop.test",
                         envelope=ENVELOPE, **options)

        async def many() -> list[Any]:
            return await asyncio.gather(*(
                probe(Target("mail", f"n{i}", pf.host, helo=HELO), spec, 5.0) for i in range(ROUNDS)))

        results = asyncio.run(many())
        assert all(r.ok for r in results), [r.detail for r in results]

        def logged() -> list[str]:
            return [line for line in _lines(pf, listener)[before:] if " disconnect from " in line]

        wait_for("Postfix to log every disconnect", lambda: len(logged()) >= ROUNDS)
    finally:
        resets = watch.stop()
    assert resets == [], f"{len(resets)} TCP resets on port {pf.ports[listener]} (source, destination): {resets}"
    assert watch.segments > 0  # the watch did see the traffic
    new = _lines(pf, listener)[before:]
    assert [line.split("]: ", 1)[1] for line in new if " disconnect from " in line] == [
        f"disconnect from unknown[127.0.0.1] {commands}"] * ROUNDS
    helos = [line for line in new if "NOQUEUE: info: RCPT" in line]
    assert len(helos) == ROUNDS and all(f"helo=<{HELO}>" in line for line in helos), helos
    bad = [line for line in new if re.search(r"lost connection|reset|SSL_accept error|TLS library problem|"
                                             r"warning|timeout after", line)]
    assert bad == []


# --- r53lb sync and r53lb run drain a stopped Postfix -----------------------------------------


def test_a_stopped_postfix_is_drained_by_sync_and_by_run(
    postfix: dict[str, Postfix], certs: Certs, moto_server: Any, tmp_path: Path,
) -> None:
    def check(pf: Postfix, name: str) -> list[dict[str, Any]]:
        return [{"smtp": {"port": pf.ports["healthy"], "starttls": True, "ca_file": str(certs.ca_file),
                          "server_name": name, "envelope": ENVELOPE}}]

    zone = Zone.make(tmp_path, moto_server.endpoint_url, "mx.interop.test", {
        "mx-a": (MX, check(postfix["mx"], "mx.interop.test")),
        "mx-b": ("127.0.90.2", check(postfix["b"], "mx-b.interop.test")),
        "mx-c": ("127.0.90.3", check(postfix["c"], "mx-c.interop.test")),
    })
    try:
        code, out, err = zone.sync()
        assert (code, out.get("changes")) == (0, []), err

        postfix["b"].stop()
        code, out, err = zone.sync()  # fall 2, fastinter: confirmed within this one run
        assert code == 0, err
        assert zone.weights() == {"mx-a": 50, "mx-b": 0, "mx-c": 50}
        [change] = out["changes"]
        assert change["node"] == "mx-b" and change["to_weight"] == 0
        assert re.match(r"^down: smtp: connect to port \d+: connection refused", change["reason"]), change["reason"]

        daemon = zone.run()
        daemon.wait_up("mx", "mx-a", "mx-c")
        postfix["c"].stop()
        took = time_until("r53lb run to drain mx-c", lambda: zone.weights()["mx-c"] == 0, deadline=20)
        assert zone.weights() == {"mx-a": 50, "mx-b": 0, "mx-c": 0}
        assert daemon.stop() == 0
        # interval 1s + (fall - 1) x fastinter 0.1s + timeout 3s + 1s for the write, as DESIGN.md budgets it
        assert took <= 5.1 + 1.0, f"drained after {took:.1f}s"
    finally:
        zone.close()
