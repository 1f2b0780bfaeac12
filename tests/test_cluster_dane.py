"""DANE with several controllers: a mismatch is a health opinion, so the writer drains on a quorum of replicas.

The cluster of tests/test_cluster.py (three `r53lb run` replicas on one moto server), its
nodes speaking STARTTLS, the pool's smtp check with `dane`. The TLSA set matches two of the
three nodes' keys: the third is drained once (one write), by whichever replica leads.
"""

from __future__ import annotations

import boto3
import pytest

from r53lb.core.dane import spki_sha256, tlsa_name
from r53lb.demo.loopback import SmtpServer
from test_cluster import NODES, RECORD, Cluster, cluster, wait_resyncs  # noqa: F401 - the fixture
from test_daemon import wait_until

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]


def test_a_dane_mismatch_is_drained_on_a_quorum_of_replicas(cluster: Cluster) -> None:  # noqa: F811
    check = cluster.doc["pools"][0]["checks"][0]["smtp"]
    port = check["port"]
    for node, address in NODES.items():  # the same nodes, now with STARTTLS and a key each
        cluster.smtp[node].stop()
        cluster.smtp[node] = SmtpServer(address, port, hostname=RECORD, tls="starttls").start()
    check.update(starttls=True, dane={"refresh": "1s"})
    keys = {n: f"3 1 1 {spki_sha256(s.cert_der)}" for n, s in cluster.smtp.items()}
    rrset = {"Name": tlsa_name(RECORD), "Type": "TLSA", "TTL": 300,
             "ResourceRecords": [{"Value": keys["hlb-1"]}, {"Value": keys["hlb-2"]}]}
    boto3.client("route53", endpoint_url=cluster.endpoint, region_name="us-east-1").change_resource_record_sets(
        HostedZoneId=cluster.zone_id, ChangeBatch={"Changes": [{"Action": "UPSERT", "ResourceRecordSet": rrset}]})
    for name in ("ctl-a", "ctl-b", "ctl-c"):
        cluster.start(name)
    wait_until("hlb-3 drained", lambda: cluster.weights().get("hlb-3") == 0, timeout=40)
    leader = wait_until("one leader", lambda: (ls := cluster.leaders()) and len(ls) == 1 and ls[0], timeout=10)
    wait_until("every replica sees hlb-3 down", lambda: leader.daemon.sample(
        "r53lb_node_votes_down", pool="mx", node="hlb-3") == 3, timeout=15)
    wait_resyncs(leader, 2)
    assert cluster.weights() == {"hlb-1": 50, "hlb-2": 50, "hlb-3": 0}
    assert len(cluster.writes()) == 1  # r53lb's change batches: the one drain, whoever led
    assert "dane: no TLSA record of _25._tcp.mx.example.com matches" in cluster.logs()
