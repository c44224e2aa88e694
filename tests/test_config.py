from __future__ import annotations

from pathlib import Path

import pytest

from avrec.config import Settings, WorkspaceConfig
from avrec.errors import ConfigError
from avrec.workspace import _TEMPLATE, Workspace

ROOT = Path(__file__).resolve().parents[1]


def test_example_and_template_match_the_defaults(tmp_path):
    """avrec.example.toml and the init template must document the real defaults."""
    assert WorkspaceConfig.load(ROOT / "avrec.example.toml") == WorkspaceConfig()
    (tmp_path / "t.toml").write_text(_TEMPLATE)
    assert WorkspaceConfig.load(tmp_path / "t.toml") == WorkspaceConfig()


def test_bad_config_names_the_key(tmp_path):
    p = tmp_path / "avrec.toml"
    p.write_text('[weighting.rules]\nlike = { weight = "lots" }\n')
    with pytest.raises(ConfigError, match=r"weighting.rules.like.weight"):
        WorkspaceConfig.load(p)
    p.write_text("[store\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        WorkspaceConfig.load(p)
    p.write_text("[nonsense]\nx = 1\n")
    with pytest.raises(ConfigError, match="nonsense"):
        WorkspaceConfig.load(p)


def test_custom_weighting_rules_are_accepted_types(tmp_path):
    p = tmp_path / "avrec.toml"
    p.write_text("[weighting.rules]\nadd_to_playlist = { weight = 4.0 }\n")
    assert "add_to_playlist" in WorkspaceConfig.load(p).event_types()


def test_settings_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("AVREC_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("AVREC_OFFLINE", "true")
    s = Settings()
    assert s.data_dir == tmp_path and s.offline is True


def test_workspace_find(tmp_path, monkeypatch):
    ws = Workspace.init(tmp_path / "ws")
    ws.close()
    (tmp_path / "ws" / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "ws" / "sub")
    monkeypatch.delenv("AVREC_WORKSPACE", raising=False)
    found = Workspace.find()
    assert found.root == (tmp_path / "ws").resolve()
    assert found.store_url == f"sqlite:///{(tmp_path / 'ws').resolve() / 'avrec.db'}"
    found.close()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="no workspace found"):
        Workspace.find()
