"""The KRaft config writer (no broker started here; tests/e2e run the node itself)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridwatch import kafka_server as ks


def parse(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_single_combined_node() -> None:
    p = parse(ks.kafka_properties(1, {"PLAINTEXT": "127.0.0.1:9092", "CONTROLLER": "127.0.0.1:9093"},
                                  "127.0.0.1:9092", {1: "127.0.0.1:9093"}, Path("/d"), {}))
    assert p["process.roles"] == "broker,controller"
    assert p["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert p["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert p["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"
    assert p["inter.broker.listener.name"] == "PLAINTEXT"
    assert p["offsets.topic.replication.factor"] == "1"
    assert p["group.initial.rebalance.delay.ms"] == "0"
    assert int(p["log.cleaner.dedupe.buffer.size"]) <= 16 * 1024 * 1024
    assert p["log.dirs"] == "/d"


def test_node_of_a_three_voter_quorum_with_cluster_overrides() -> None:
    voters = {1: "10.9.0.1:9093", 2: "10.9.0.2:9093", 3: "10.9.0.3:9093"}
    p = parse(ks.kafka_properties(2, {"PLAINTEXT": "10.9.0.2:9092", "CONTROLLER": "10.9.0.2:9093"},
                                  {"PLAINTEXT": "10.9.0.2:9092"}, voters, "/data",
                                  {"default.replication.factor": 3, "min.insync.replicas": 2}))
    assert p["node.id"] == "2"
    assert p["controller.quorum.voters"] == "1@10.9.0.1:9093,2@10.9.0.2:9093,3@10.9.0.3:9093"
    assert p["default.replication.factor"] == "3" and p["min.insync.replicas"] == "2"


def test_bad_inputs_say_what_is_wrong() -> None:
    with pytest.raises(ks.KafkaServerError, match="CONTROLLER"):
        ks.kafka_properties(1, {"PLAINTEXT": "h:1"}, "h:1", {1: "h:2"}, "/d")
    with pytest.raises(ks.KafkaServerError, match="voters"):
        ks.kafka_properties(4, {"PLAINTEXT": "h:1", "CONTROLLER": "h:2"}, "h:1", {1: "h:2"}, "/d")


def test_missing_jars_tell_to_run_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ks.LIBS_ENV, str(tmp_path))
    with pytest.raises(ks.KafkaServerError, match=r"\./run setup"):
        ks.kafka_libs()


def test_stored_cluster_id_is_read_back(tmp_path: Path) -> None:
    assert ks.stored_cluster_id(tmp_path) is None
    (tmp_path / "meta.properties").write_text("version=1\ncluster.id=AbC-12_x\nnode.id=1\n")
    assert ks.stored_cluster_id(tmp_path) == "AbC-12_x"
    with pytest.raises(ks.KafkaServerError, match="belongs to"):
        ks.format_storage(tmp_path / "server.properties", tmp_path, "other")
