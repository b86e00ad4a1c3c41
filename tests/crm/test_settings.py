"""Configuration: environment, TOML, and errors that name the wrong setting."""

import pytest

from crm.settings import SettingsError, load_settings


def test_defaults_need_no_environment():
    settings = load_settings(env={})
    assert (settings.host, settings.port, settings.phone_region, settings.database_url) == (
        "127.0.0.1", 8080, "RU", None)


@pytest.mark.parametrize("name, value", [("CALLBOARD_PORT", "eighty"), ("CALLBOARD_PORT", "70000"),
                                         ("DATABASE_URL", "mysql://x"), ("CALLBOARD_PHONE_REGION", "XX"),
                                         ("CALLBOARD_PBX", "tcp://pbx"), ("CALLBOARD_TIMEZONE", "Mars/Base"),
                                         ("REDIS_URL", "localhost:6379")])
def test_a_wrong_setting_names_itself(name, value):
    with pytest.raises(SettingsError, match=name):
        load_settings(env={name: value})


def test_pbx_list_from_environment():
    settings = load_settings(env={"CALLBOARD_PBX": "ami://cti:s%40cret@10.0.0.5:5038/office,ami://u:p@pbx2/plant"})
    assert [(p.name, p.host, p.port, p.username, p.secret) for p in settings.pbxes] == [
        ("office", "10.0.0.5", 5038, "cti", "s@cret"), ("plant", "pbx2", 5038, "u", "p")]
    assert "s@cret" not in repr(settings)


def test_toml_file_and_environment_wins(tmp_path):
    path = tmp_path / "callboard.toml"
    path.write_text('port = 9000\nphone_region = "KZ"\n[[pbx]]\nname = "main"\nusername = "cti"\nsecret = "x"\n')
    settings = load_settings(env={"CALLBOARD_PORT": "9100"}, config_file=path)
    assert (settings.port, settings.phone_region, settings.pbxes[0].name) == (9100, "KZ", "main")


def test_unknown_or_broken_toml_is_named(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("prot = 1\n")
    with pytest.raises(SettingsError, match="prot"):
        load_settings(env={}, config_file=path)
    path.write_text("port = \n")
    with pytest.raises(SettingsError, match="bad.toml"):
        load_settings(env={}, config_file=path)
