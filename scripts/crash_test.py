"""Crash safety: ingest continuously while killing the server with SIGKILL, then check nothing acknowledged is lost.

    python scripts/crash_test.py [--rounds 20] [--seed 1] [--kind flat] [--scenario ingest|lifecycle|both]

Starts `vsearch serve` on a temporary data dir; a client writes batches (new documents, and replacements of
earlier ones) and records every id the server acknowledged. At a random moment the server is killed (SIGKILL),
SQLite's integrity is checked, the server is started again, and: every acknowledged document is there, SQLite and
FAISS hold the same number of vectors, and acknowledged documents are found by their own vectors.

The lifecycle scenario kills the server while a client creates, fills and deletes indexes in a loop; after each
restart the listing, every listed index and /metrics must answer, every acknowledged create (not deleted since)
must be there with its document, and every acknowledged delete must be gone. Loopback only, bounded in rounds and
time.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

import httpx
from serving import free_port, start_server

DIMS = 8


class Writer(threading.Thread):
    """Writes batches until told to stop or the server goes away; remembers what was acknowledged."""

    def __init__(self, url: str, rng: random.Random, state: dict) -> None:
        super().__init__(daemon=True)
        self.url, self.rng, self.state = url, rng, state
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            while not self.stop.is_set():
                acked: dict[str, list[float]] = self.state["vectors"]
                new = [f"d{self.state['next'] + i}" for i in range(20)]
                old = self.rng.sample(sorted(acked), min(5, len(acked)))
                docs = [{"id": i, "vector": [self.rng.uniform(-1, 1) for _ in range(DIMS)]} for i in new + old]
                self.state["in_flight"] = {d["id"] for d in docs}
                try:
                    response = http.post("/v1/indexes/crash/documents", json={"documents": docs})
                except httpx.TransportError:
                    return  # killed: this batch is neither acknowledged nor (necessarily) lost
                if response.status_code != 200:
                    raise RuntimeError(f"write failed: {response.status_code} {response.text}")
                self.state["next"] += 20
                for doc in docs:
                    acked[doc["id"]] = doc["vector"]
                self.state["in_flight"] = set()


def all_ids(http: httpx.Client) -> set[str]:
    ids, after = set(), None
    while True:
        page = http.get(
            "/v1/indexes/crash/documents", params={"limit": 1000, **({"after": after} if after else {})}
        ).json()
        ids.update(d["id"] for d in page["data"])
        if not page["has_more"]:
            return ids
        after = page["last_id"]


def crash_rounds(rounds: int, seed: int = 1, kind: str = "flat", log=print) -> list[dict]:
    rng = random.Random(seed)
    results = []
    with tempfile.TemporaryDirectory() as data_dir:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = start_server(data_dir, port)
        try:
            body = {"name": "crash", "model": "all-MiniLM-L6-v2", "dimensions": DIMS, "kind": kind}
            httpx.post(f"{url}/v1/indexes", json=body, timeout=30).raise_for_status()
            state: dict = {"vectors": {}, "next": 0, "in_flight": set()}
            for round_number in range(1, rounds + 1):
                writer = Writer(url, rng, state)
                writer.start()
                time.sleep(rng.uniform(0.3, 1.5))
                server.kill()  # SIGKILL: no shutdown hook, no checkpoint
                server.wait()
                writer.stop.set()
                writer.join(timeout=30)
                with sqlite3.connect(Path(data_dir) / "indexes" / "crash" / "index.sqlite") as db:
                    integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
                server = start_server(data_dir, port)
                with httpx.Client(base_url=url, timeout=60) as http:
                    stats = http.get("/v1/indexes/crash").json()
                    stored = all_ids(http)
                    acknowledged = state["vectors"]
                    missing = set(acknowledged) - stored
                    certain = sorted(set(acknowledged) - state["in_flight"])
                    not_found = 0
                    for doc_id in rng.sample(certain, min(20, len(certain))):
                        hit = http.post(
                            "/v1/indexes/crash/query", json={"vector": acknowledged[doc_id], "top_k": 1}
                        ).json()
                        not_found += hit["data"][0]["id"] != doc_id
                result = {
                    "round": round_number,
                    "acknowledged": len(acknowledged),
                    "sqlite_documents": stats["document_count"],
                    "sqlite_vectors": stats["vector_count"],
                    "faiss_vectors": stats["faiss_vectors"],
                    "missing": len(missing),
                    "not_found_by_vector": not_found,
                    "integrity": integrity,
                }
                results.append(result)
                log(
                    f"round {round_number:>2}: acknowledged {len(acknowledged):>6}  sqlite {stats['vector_count']:>6}"
                    f"  faiss {stats['faiss_vectors']:>6}  missing {len(missing)}  not found {not_found}"
                    f"  integrity {integrity}"
                )
                ok = (
                    not missing
                    and not not_found
                    and integrity == "ok"
                    and stats["vector_count"] == stats["faiss_vectors"] == stats["document_count"]
                )
                if not ok:
                    raise SystemExit(f"round {round_number} failed: {result}")
        finally:
            server.kill()
            server.wait()
    return results


class Lifecycle(threading.Thread):
    """Creates an index, adds a document, deletes an older index; over and over, until stopped or killed."""

    def __init__(self, url: str, rng: random.Random, state: dict) -> None:
        super().__init__(daemon=True)
        self.url, self.rng, self.state = url, rng, state
        self.stop = threading.Event()

    def run(self) -> None:
        live, gone = self.state["live"], self.state["gone"]
        with httpx.Client(base_url=self.url, timeout=30) as http:
            while not self.stop.is_set():
                name = f"lc-{self.state['next']}"
                self.state["next"] += 1
                try:
                    body = {"name": name, "model": "all-MiniLM-L6-v2", "dimensions": DIMS}
                    if http.post("/v1/indexes", json=body).status_code != 200:
                        raise RuntimeError(f"create {name} failed")
                    live.add(name)  # acknowledged: from here on it must exist (until deleted)
                    doc = {"documents": [{"id": "a", "text": name, "vector": [1.0] * DIMS}]}
                    if http.post(f"/v1/indexes/{name}/documents", json=doc).status_code != 200:
                        raise RuntimeError(f"ingest into {name} failed")
                    self.state["filled"].add(name)
                    if len(live) > 3:
                        victim = self.rng.choice(sorted(live - {name}))
                        self.state["deleting"] = victim
                        if http.delete(f"/v1/indexes/{victim}").status_code != 200:
                            raise RuntimeError(f"delete {victim} failed")
                        live.discard(victim)
                        gone.add(victim)
                        self.state["deleting"] = None
                except httpx.TransportError:
                    return  # killed


def lifecycle_rounds(rounds: int, seed: int = 1, log=print) -> list[dict]:
    rng = random.Random(seed)
    results = []
    with tempfile.TemporaryDirectory() as data_dir:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = start_server(data_dir, port)
        state: dict = {"live": set(), "gone": set(), "filled": set(), "next": 0, "deleting": None}
        try:
            for round_number in range(1, rounds + 1):
                worker = Lifecycle(url, rng, state)
                worker.start()
                time.sleep(rng.uniform(0.3, 1.5))
                server.kill()
                server.wait()
                worker.stop.set()
                worker.join(timeout=30)
                server = start_server(data_dir, port)
                with httpx.Client(base_url=url, timeout=60) as http:
                    listing = http.get("/v1/indexes")
                    listed = {i["name"] for i in listing.json()["data"]} if listing.status_code == 200 else set()
                    broken = [n for n in listed if http.get(f"/v1/indexes/{n}").status_code != 200]
                    broken += [] if listing.status_code == 200 else ["(listing)"]
                    broken += [] if http.get("/metrics").status_code == 200 else ["(metrics)"]
                    in_doubt = {state["deleting"]} if state["deleting"] else set()  # killed mid-delete
                    missing = sorted(state["live"] - listed - in_doubt)
                    resurrected = sorted(state["gone"] & listed)
                    empty = [n for n in sorted(state["filled"] & listed)
                             if http.get(f"/v1/indexes/{n}/documents/a").status_code != 200]  # fmt: skip
                    vector = {"vector": [1.0] * DIMS, "top_k": 1}
                    unqueryable = [n for n in sorted(listed) if http.post(f"/v1/indexes/{n}/query",
                                                                         json=vector).status_code != 200]  # fmt: skip
                state["deleting"] = None
                state["live"] &= listed
                result = {"round": round_number, "indexes": len(listed), "broken": broken, "missing": missing,
                          "resurrected": resurrected, "empty": empty, "unqueryable": unqueryable}  # fmt: skip
                results.append(result)
                log(f"round {round_number:>2}: {len(listed):>3} indexes  broken {len(broken)}  missing "
                    f"{len(missing)}  resurrected {len(resurrected)}  empty {len(empty)}  "
                    f"unqueryable {len(unqueryable)}")  # fmt: skip
                if broken or missing or resurrected or empty or unqueryable:
                    raise SystemExit(f"round {round_number} failed: {result}")
        finally:
            server.kill()
            server.wait()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kind", choices=["flat", "hnsw"], default="flat")
    parser.add_argument("--scenario", choices=["ingest", "lifecycle", "both"], default="both")
    args = parser.parse_args()
    if args.scenario in ("ingest", "both"):
        results = crash_rounds(args.rounds, args.seed, args.kind)
        print(f"{len(results)} kills, {results[-1]['acknowledged']} acknowledged documents, none lost")
    if args.scenario in ("lifecycle", "both"):
        results = lifecycle_rounds(args.rounds, args.seed)
        print(f"{len(results)} kills during index create/delete loops: 0 broken listings, no index lost or back")


if __name__ == "__main__":
    main()
