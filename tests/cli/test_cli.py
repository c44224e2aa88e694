"""The CLI, run as a user runs it: the installed ``avrec`` command in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write

AVREC = shutil.which("avrec") or str(Path(sys.executable).parent / "avrec")


def run(
    *args: str, cwd: Path | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [AVREC, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        timeout=300,
    )


def test_init_ingest_stats(tmp_path):
    ws = tmp_path / "ws"
    assert run("init", str(ws)).returncode == 0
    assert (ws / "avrec.toml").exists() and (ws / "avrec.db").exists()
    items = write(tmp_path / "items.csv", "video_id,name,tags\nv1,Cats,cat|funny\nv2,Dogs,dog\n")
    r = run("-w", str(ws), "ingest", "items", str(items), "--map", "item_id=video_id,title=name")
    assert r.returncode == 0, r.stderr
    assert "2 accepted" in r.stdout
    ev = write(
        tmp_path / "events.csv",
        "user_id,item_id,event,value,timestamp\n"
        "u1,v1,play,0.9,2024-01-01T00:00:00Z\nu1,v2,like,,2024-01-02T00:00:00Z\n"
        "u2,v1,dance,,2024-01-02T00:00:00Z\n",
    )
    r = run("-w", str(ws), "ingest", "events", str(ev))
    assert r.returncode == 0, r.stderr
    assert "1 rejected" in r.stdout and "unknown event type" in r.stdout
    rejects = list((ws / "rejects").glob("events.csv.*.rejects.csv"))
    assert len(rejects) == 1 and ",4,unknown event type 'dance'," in rejects[0].read_text()
    r = run("stats", "--json", cwd=ws)  # found from the working directory
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["events"] == 2 and s["items"] == 2 and s["users"] == 1
    assert s["events_by_type"] == {"play": 1, "like": 1}
    assert s["first_event"] == 1704067200.0
    r = run("-w", str(ws), "stats")
    assert "sparsity" in r.stdout and "2024-01-01" in r.stdout


def test_user_mistakes_are_one_line_errors(tmp_path):
    r = run("stats", cwd=tmp_path)
    assert r.returncode == 1
    assert "error:" in r.stderr and "avrec init" in r.stderr and "Traceback" not in r.stderr
    ws = tmp_path / "ws"
    run("init", str(ws))
    r = run("-w", str(ws), "ingest", "events", str(tmp_path / "nope.csv"))
    assert r.returncode == 1 and "file not found" in r.stderr and "Traceback" not in r.stderr
    bad = write(tmp_path / "bad.csv", "uid,item\n1,2\n")
    r = run("-w", str(ws), "ingest", "events", str(bad))
    assert r.returncode == 1 and "missing required column" in r.stderr
    r = run("--debug", "-w", str(ws), "ingest", "events", str(bad))
    assert "Traceback" in r.stderr
    assert run("init", str(ws)).returncode == 1  # already there


@pytest.mark.realdata
def test_datasets_load_and_anomalies(tmp_path, data_dir):
    ws = tmp_path / "ws"
    run("init", str(ws))
    env = {"AVREC_DATA_DIR": str(data_dir)}
    r = run("datasets", "list", env=env)
    assert r.returncode == 0 and "movielens-100k" in r.stdout
    r = run("-w", str(ws), "datasets", "load", "movielens-100k", env=env)
    assert r.returncode == 0, r.stderr
    assert "u.data: 100,000" in r.stdout and "0 rejected" in r.stdout
    r = run("-w", str(ws), "stats", "--json")
    s = json.loads(r.stdout)
    assert s["events"] == 100_000 and s["users"] == 943 and s["items"] == 1_682
    assert s["events_per_user"]["min"] == 20
    r = run(
        "-w",
        str(ws),
        "anomalies",
        "--contamination",
        "0.01",
        "--exclude",
        "--output",
        str(tmp_path / "anom.csv"),
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "anom.csv").exists()
    s = json.loads(run("-w", str(ws), "stats", "--json").stdout)
    assert 1 <= s["excluded_users"] <= 20


def test_missing_dataset_message(tmp_path):
    r = run("datasets", "info", "lastfm-2k", env={"AVREC_DATA_DIR": str(tmp_path)})
    assert r.returncode == 1
    assert "user_artists.dat" in r.stderr and "grouplens" in r.stderr


def test_mapping_from_config(tmp_path):
    ws = tmp_path / "ws"
    run("init", str(ws))
    cfg = ws / "avrec.toml"
    cfg.write_text(
        cfg.read_text() + '\n[ingest.mapping.events]\nuser_id = "uid"\n'
        'item_id = "vid"\ntimestamp = "t"\n'
    )
    ev = write(tmp_path / "e.csv", "uid,vid,t,who\nu1,v1,5,a\n")
    r = run("-w", str(ws), "ingest", "events", str(ev))
    assert r.returncode == 0, r.stderr
    assert "1 accepted" in r.stdout
    r = run("-w", str(ws), "ingest", "events", str(ev), "--map", "user_id=who")  # flag wins
    assert r.returncode == 0, r.stderr
    s = json.loads(run("-w", str(ws), "stats", "--json").stdout)
    assert s["users"] == 2


def test_evaluate_on_the_workspace(tmp_path):
    ws = tmp_path / "ws"
    run("init", str(ws))
    lines = ["user_id,item_id,timestamp"]
    for u in range(60):
        base = 0 if u % 2 == 0 else 30
        for k in range(8):
            lines.append(f"u{u},i{base + (u * 7 + k * 3) % 30},{1000 + k}")
    ev = write(tmp_path / "e.csv", "\n".join(lines) + "\n")
    assert run("-w", str(ws), "ingest", "events", str(ev)).returncode == 0
    out = tmp_path / "res.json"
    r = run(
        "-w",
        str(ws),
        "evaluate",
        "--models",
        "pop,itemknn",
        "--k",
        "5",
        "--metrics",
        "hr,ndcg,coverage",
        "--bootstrap",
        "50",
        "--output",
        str(out),
        "--report",
        str(tmp_path / "rep"),
    )
    assert r.returncode == 0, r.stderr
    assert "ndcg@5" in r.stdout and "itemknn" in r.stdout
    doc = json.loads(out.read_text())
    recs = {(x["model"], x["metric"]): x for x in doc["results"]}
    assert recs[("itemknn", "ndcg@5")]["value"] > recs[("pop", "ndcg@5")]["value"]
    assert doc["protocol"]["ranking"] == "full ranking, history excluded"
    assert (tmp_path / "rep" / "report.html").exists()
    r = run("-w", str(ws), "evaluate", "--models", "svd")
    assert r.returncode == 1 and "unknown model" in r.stderr


@pytest.mark.realdata
def test_evaluate_with_experiment_file(tmp_path, data_dir):
    cfg = tmp_path / "exp.toml"
    cfg.write_text(
        'dataset = "movielens-100k"\noutput = "out.json"\n[split]\nkind = "fixed"\n'
        'file = "${AVREC_DATA_DIR}/splits/movielens-100k.loo.tsv"\n[metrics]\n'
        'names = ["hr", "ndcg"]\nk = [10]\n[[models]]\nname = "pop"\n'
        '[[models]]\nname = "ease"\nlabel = "ease-300"\nl2 = 300.0\n'
    )
    r = run(
        "evaluate",
        "--config",
        str(cfg),
        "--bootstrap",
        "100",
        env={"AVREC_DATA_DIR": str(data_dir)},
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "out.json").read_text())
    recs = {(x["model"], x["metric"]): x["value"] for x in doc["results"]}
    assert round(recs[("ease-300", "ndcg@10")], 4) == 0.0728
    assert round(recs[("pop", "hr@10")], 4) == 0.0838


def test_train_registers_a_bundle(tmp_path):
    ws = tmp_path / "ws"
    run("init", str(ws))
    lines = ["user_id,item_id,timestamp"] + [
        f"u{u},i{(u + k) % 12},{k}" for u in range(30) for k in range(6)
    ]
    assert (
        run(
            "-w",
            str(ws),
            "ingest",
            "events",
            str(write(tmp_path / "e.csv", "\n".join(lines) + "\n")),
        ).returncode
        == 0
    )
    r = run("-w", str(ws), "train", "--model", "ease", "--params", "l2=50")
    assert r.returncode == 0, r.stderr
    assert "registered as ease v1" in r.stdout
    bundle = ws / "artifacts" / "models" / "ease" / "1"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["kind"] == "ease" and manifest["config"]["l2"] == 50.0
    r = run("-w", str(ws), "tune", "--model", "itemknn", "--trials", "3")
    assert r.returncode == 0, r.stderr
    assert "best valid ndcg@10" in r.stdout


def test_train_applies_the_retention_period_first(tmp_path):
    """``[privacy] retention_days``: events past it are deleted before training, so the
    model (and every scheduled retraining) never learns from them."""
    import time

    ws = tmp_path / "ws"
    run("init", str(ws))
    toml = ws / "avrec.toml"
    toml.write_text(toml.read_text().replace("# retention_days = 365", "retention_days = 365"))
    now = time.time()
    lines = ["user_id,item_id,timestamp"] + [
        f"u{u},i{(u + k) % 12},{now - (400 if k < 2 else 10) * 86400 + u}"
        for u in range(30)
        for k in range(6)
    ]
    events = write(tmp_path / "e.csv", "\n".join(lines) + "\n")
    assert run("-w", str(ws), "ingest", "events", str(events)).returncode == 0
    r = run("-w", str(ws), "train", "--model", "ease")
    assert r.returncode == 0, r.stderr
    assert "retention: 60 events older than 365 days deleted" in r.stdout
    r = run("-w", str(ws), "stats", "--json")
    assert json.loads(r.stdout)["events"] == 120


@pytest.mark.realdata
def test_analyze_show_and_mistakes(tmp_path):
    media = Path(__file__).resolve().parents[3] / "shared" / "media"
    if not media.is_dir():
        pytest.skip("../shared/media not found")
    ws = tmp_path / "ws"
    assert run("init", str(ws)).returncode == 0
    cfg = ws / "avrec.toml"
    # the shared media folder is allowed by name: no other path outside the workspace is read
    cfg.write_text(
        cfg.read_text()
        .replace("tag_min_items = 2", "tag_min_items = 1")
        .replace("media_roots = []", f"media_roots = [{str(media)!r}, {str(tmp_path)!r}]")
    )
    items = write(
        tmp_path / "items.csv",
        "item_id,title,tags,image\n"
        f"cat,Chelsea on the sofa,cat,{media / 'images/chelsea.png'}\n"
        "piano,Relaxing piano music for studying,music,\n"
        f"gone,A lost file,,{tmp_path / 'missing.png'}\n",
    )
    assert run("--workspace", str(ws), "ingest", "items", str(items)).returncode == 0
    first = json.loads(run("--workspace", str(ws), "analyze", "--limit", "1", "--json").stdout)
    assert first["total"] == 1 and first["analysed"] == 1
    out = run("--workspace", str(ws), "analyze", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["analysed"] == 2 and report["unchanged"] == 1
    assert list(report["errors"]) == ["gone"], report
    forced = json.loads(run("--workspace", str(ws), "analyze", "--force", "--json").stdout)
    assert forced["analysed"] == 3 and forced["segments_encoded"] == 0  # caches still apply

    shown = run("--workspace", str(ws), "analyze", "--item", "cat", "--show", "--json")
    assert shown.returncode == 0, shown.stderr
    [cat] = json.loads(shown.stdout)
    assert cat["status"] == "ok" and "vectors" not in cat
    assert "cat" in cat["info"]["labels"][0][0]
    assert cat["info"]["tags"][0]["tag"] == "cat"

    pretty = run("--workspace", str(ws), "analyze", "--item", "gone", "--show")
    assert pretty.returncode == 0 and "media file not found" in pretty.stdout

    again = json.loads(run("--workspace", str(ws), "analyze", "--json").stdout)
    assert again["analysed"] == 0 and again["unchanged"] == 3

    bad = run("--workspace", str(ws), "analyze", "--item", "nope")
    assert bad.returncode == 1 and "unknown item" in bad.stderr
    bad = run("--workspace", str(ws), "analyze", "--show")
    assert bad.returncode == 1 and "--show needs --item" in bad.stderr


def song_workspace(root: Path, extra_events: tuple[str, ...] = ()) -> Path:
    """A workspace of 24 songs (jazz i0-i11, rock i12-i23, English and French, one minute
    longer each) and 40 users who each play one genre, trained with the default pipeline
    through the CLI (the service tests serve it too). ``extra_events``: more
    ``user_id,item_id,timestamp`` lines."""
    ws = root / "ws"
    assert run("init", str(ws)).returncode == 0
    rows = ["item_id,title,description,categories,language,duration"]
    for i in range(24):
        cat = "jazz" if i < 12 else "rock"
        desc = "a quiet piano trio" if i < 12 else "loud electric guitars"
        rows.append(f"i{i},Song {i},{desc},{cat},{'fr' if i % 2 else 'en'},{60 * (i + 1)}")
    r = run("-w", str(ws), "ingest", "items", str(write(root / "items.csv", "\n".join(rows))))
    assert r.returncode == 0, r.stderr
    lines = ["user_id,item_id,timestamp"]
    for u in range(40):
        base = 0 if u % 2 == 0 else 12
        lines += [f"u{u},i{base + (u + 3 * k) % 12},{1000 * u + k}" for k in range(8)]
    lines += extra_events
    r = run("-w", str(ws), "ingest", "events", str(write(root / "e.csv", "\n".join(lines))))
    assert r.returncode == 0, r.stderr
    r = run("-w", str(ws), "train")
    assert r.returncode == 0, r.stderr
    assert "registered as pipeline v1" in r.stdout
    return ws


def test_pipeline_train_recommend_filter_similar_playlist(tmp_path):
    """The default pipeline end to end through the CLI: trained on the workspace, answering
    with explanations, filters, similar items and a playlist."""
    ws = song_workspace(tmp_path)
    r = run("-w", str(ws), "recommend", "--user", "u0", "--k", "4", "--explain", "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)[0]["items"]
    assert len(got) == 4 and all(x["explanation"]["text"] for x in got)
    r = run(
        "-w", str(ws), "recommend", "-u", "u0", "--k", "3", "--category", "rock",
        "--language", "fr", "--max-duration", "1200", "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    ids = [x["item_id"] for x in json.loads(r.stdout)[0]["items"]]
    assert len(ids) == 3
    assert all(12 <= int(i[1:]) < 20 and int(i[1:]) % 2 == 1 for i in ids)
    r = run("-w", str(ws), "recommend", "-u", "stranger", "--k", "3")
    assert r.returncode == 0 and "for stranger" in r.stdout
    r = run("-w", str(ws), "similar", "--item", "i1", "--k", "3", "--json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)[0]["similar"]) == 3
    r = run("-w", str(ws), "playlist", "--seed", "i1", "--n", "8", "--json")
    assert r.returncode == 0, r.stderr
    playlist = json.loads(r.stdout)
    ids = [x["item_id"] for x in playlist]
    assert ids[0] == "i1" and len(ids) == 8 and len(set(ids)) == 8
    assert [x["after"] for x in playlist[1:]] == ids[:-1]
    r = run("-w", str(ws), "playlist", "--n", "3")
    assert r.returncode != 0 and "seed item, a user or a mood" in r.stderr
    default = Path(__file__).resolve().parents[2] / "configs" / "default.toml"
    out = tmp_path / "eval.json"
    r = run(
        "-w", str(ws), "evaluate", "--pipeline", str(default), "--split", "loo",
        "--metrics", "ndcg", "--k", "10", "--bootstrap", "50", "--output", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    models = {row["model"] for row in json.loads(out.read_text())["results"]}
    assert models == {"ease", "markov", "itemknn", "pipeline"}  # the pipeline and its sources
    # search and requests in words against the same bundle
    r = run("-w", str(ws), "search", "song 7", "--k", "3", "--json")
    assert r.returncode == 0, r.stderr
    found = json.loads(r.stdout)["items"]
    assert found[0]["item_id"] == "i7" and "title" in found[0]["matched"]
    r = run("-w", str(ws), "search", "sogn 7", "--k", "3", "--mode", "keyword", "--json")
    assert json.loads(r.stdout)["items"][0]["item_id"] == "i7"  # a typo forgiven
    r = run("-w", str(ws), "ask", "jazz songs in French, under 5 minutes", "--json")
    assert r.returncode == 0, r.stderr
    asked = json.loads(r.stdout)
    assert asked["constraints"] == {"max_duration": 300.0, "languages": ["fr"], "include": ["jazz"]}
    got = {x["item_id"] for x in asked["items"]}
    assert got and got <= {"i1", "i3"}  # French jazz songs of at most 5 minutes
    for turn, query in enumerate(["jazz songs", "not the first one"]):
        r = run("-w", str(ws), "ask", query, "--user", "u0", "--conversation", "c1", "--json")
        assert r.returncode == 0, r.stderr
        ids = [x["item_id"] for x in json.loads(r.stdout)["items"]]
        if turn == 0:
            first = ids[0]
    assert first not in ids  # the conversation was kept between the two calls
    r = run("-w", str(ws), "search", "song", "--mode", "fuzzy")
    assert r.returncode != 0 and "unknown search mode" in r.stderr
    r = run("-w", str(ws), "graph", "--item", "i1", "--user", "u1", "--k", "3", "--json")
    assert r.returncode == 0, r.stderr
    g = json.loads(r.stdout)
    assert any(e["type"] == "genre" and e["name"] == "jazz" for e in g["entities"])
    assert len(g["neighbours"]) == 3 and g["paths"]  # u1 played jazz songs too
