"""Profile cache: keys, versioned file names, hits, refresh, corrupt files, concurrent writers."""

from __future__ import annotations

import dataclasses
import json
import threading
import time

import pytest

from coinfer.profile.cache import (
    PROFILE_SCHEMA,
    ProfileKey,
    cache_dir,
    cache_path,
    get_or_measure,
    read_cached,
)

KEY = ProfileKey(
    model="tiny_cnn", graph_hash="abc", device="dev", host="h", threads=1, quota=0.5, torch="2.x"
)


def test_every_key_field_changes_the_file():
    seen = {KEY.filename()}
    for f, v in [("model", "m2"), ("graph_hash", "x"), ("device", "d2"), ("host", "h2"), ("dtype", "float16"),
                 ("batch", 2), ("threads", 2), ("quota", None), ("torch", "9"), ("max_pieces", 4)]:  # fmt: skip
        name = dataclasses.replace(KEY, **{f: v}).filename()
        assert name not in seen, f
        seen.add(name)
    assert f"-v{PROFILE_SCHEMA}-" in KEY.filename()


def test_cache_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("COINFER_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path / "profiles"


def test_hit_miss_refresh_and_corruption(tmp_path):
    calls = []

    def measure():
        calls.append(1)
        return {"value": len(calls)}

    data, hit = get_or_measure(KEY, measure, directory=tmp_path)
    assert (data["value"], hit, len(calls)) == (1, False, 1)
    data, hit = get_or_measure(KEY, measure, directory=tmp_path)
    assert (data["value"], hit, len(calls)) == (1, True, 1)
    assert data["key"] == KEY.to_dict() and data["schema"] == PROFILE_SCHEMA
    data, hit = get_or_measure(KEY, measure, directory=tmp_path, refresh=True)
    assert (data["value"], hit) == (2, False)
    cache_path(KEY, tmp_path).write_text("{not json")
    assert read_cached(KEY, tmp_path) is None
    data, hit = get_or_measure(KEY, measure, directory=tmp_path)
    assert (data["value"], hit) == (3, False)
    # a file whose recorded key differs (hash collision / hand edit) is not trusted
    bad = json.loads(cache_path(KEY, tmp_path).read_text())
    bad["key"]["threads"] = 7
    cache_path(KEY, tmp_path).write_text(json.dumps(bad))
    assert read_cached(KEY, tmp_path) is None


def test_concurrent_profilers_measure_once(tmp_path):
    calls = []

    def slow_measure():
        calls.append(1)
        time.sleep(0.3)
        return {"value": 1}

    results = []
    threads = [
        threading.Thread(
            target=lambda: results.append(get_or_measure(KEY, slow_measure, directory=tmp_path))
        )
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert sorted(hit for _, hit in results) == [False, True, True]


@pytest.mark.parametrize("bad", ["", "[]"])
def test_non_profile_files_are_misses(tmp_path, bad):
    tmp_path.mkdir(exist_ok=True)
    cache_path(KEY, tmp_path).write_text(bad)
    assert read_cached(KEY, tmp_path) is None
