import pytest
import yaml

from spark_jobs.config import CHANNELS, BlocklistConfig, ConfigError, load_config


def test_load_config_defaults_to_local_engine_and_the_sources_that_have_landing_folders(tmp_path):
    cfg = load_config(env={"CDP_LANDING": str(tmp_path)})
    assert cfg.engine.kind == "local"
    assert cfg.ingest.sources is None and set(CHANNELS) <= set(cfg.sources.sources)
    assert cfg.paths.lakehouse_uri().endswith("/lakehouse")
    assert cfg.ingest_sources() == ()
    for name in ("crm", "sensors_app"):
        (tmp_path / name).mkdir()
    assert cfg.ingest_sources() == ("crm", "sensors_app")  # in conf/sources.yaml order


def test_load_config_rejects_an_undeclared_ingest_source(tmp_path):
    conf = tmp_path / "cdp.yaml"
    conf.write_text("ingest:\n  sources: [crm, fax]\n")
    with pytest.raises(ConfigError, match=r"ingest.sources: \['fax'\] are not declared"):
        load_config(conf, env={})


def test_load_config_environment_overrides_engine_and_paths(tmp_path):
    cfg = load_config(env={"CDP_ENGINE": "connect", "CDP_SPARK_REMOTE": "sc://spark:15002", "CDP_LAKEHOUSE": "s3://bucket/lh/"})
    assert cfg.engine.kind == "connect"
    assert cfg.engine.remote == "sc://spark:15002"
    assert cfg.paths.lakehouse_uri() == "s3://bucket/lh"


def test_load_config_rejects_unknown_engine_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"engine\.kind"):
        load_config(env={"CDP_ENGINE": "flink"})


def test_load_config_rejects_unknown_keys(tmp_path):
    conf = tmp_path / "cdp.yaml"
    conf.write_text("ingest:\n  channels: [app_events]\nengine:\n  kindd: local\n")
    with pytest.raises(ConfigError) as err:
        load_config(conf, env={})
    assert "channels" in str(err.value) and "kindd" in str(err.value) and str(conf) in str(err.value)


def test_load_config_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", env={})


def test_load_config_bad_remote_url():
    with pytest.raises(ConfigError, match="sc://"):
        load_config(env={"CDP_ENGINE": "connect", "CDP_SPARK_REMOTE": "http://spark:15002"})


@pytest.mark.parametrize(("identity", "says"), [
    ("limits: {fax: 1}", "fax"),
    ("limits: {phone: 0}", "at least 1"),
    ("priority: [member_id, phone]", "missing"),
    ("strong_types: [member_id, wechat]", "wechat"),
    ("algorithm: graphx", "algorithm"),
])
def test_load_config_rejects_bad_identity_rules_naming_the_problem(tmp_path, identity, says):
    conf = tmp_path / "cdp.yaml"
    conf.write_text(f"identity:\n  {identity}\n")
    with pytest.raises(ConfigError) as err:
        load_config(conf, env={})
    assert says in str(err.value) and "identity" in str(err.value)


@pytest.mark.parametrize(("pattern", "says"), [
    (r"\Z", "use `$` or `\\z`"),
    (r"(?P<x>a)(?P=x)", "backreference"),
    (r"(?=a)", "lookahead"),
    (r"\1", "backreference"),
    (r"(?>a)", "atomic group"),
    (r"a++", "possessive"),
    (r"\¥", "write `¥`"),
])
def test_load_config_rejects_a_blocklist_regex_sail_cannot_run_naming_the_key(tmp_path, pattern, says):
    conf = tmp_path / "cdp.yaml"
    conf.write_text(f"identity:\n  blocklist:\n    regex: {{email: ['^ok$', '{pattern}']}}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(conf, env={})
    message = str(err.value)
    assert message.startswith(f"{conf}: identity.blocklist.regex.email[1]: `{pattern}`: ") and says in message


def test_load_config_accepts_the_default_blocklist_regexes(tmp_path):
    defaults = BlocklistConfig().regex  # defaults skip validation: validate them as if written in the file
    conf = tmp_path / "cdp.yaml"
    conf.write_text(yaml.safe_dump({"identity": {"blocklist": {"regex": {k: list(v) for k, v in defaults.items()}}}}))
    assert load_config(conf, env={}).identity.blocklist.regex == defaults
