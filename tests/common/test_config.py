import pytest

from fedscene.common.config import load_config, parse_config
from fedscene.common.errors import ConfigError


def test_defaults_are_valid():
    config = load_config(None)
    assert config.data.source == "embedded"
    assert config.privacy.enabled


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[federation]\nrounds = 3\nround = 4\n")
    with pytest.raises(ConfigError, match=r"unknown key 'federation.round'"):
        load_config(path)


def test_out_of_range_value_names_key_and_value():
    with pytest.raises(ConfigError, match=r"federation.rounds.*greater than or equal to 1"):
        parse_config({"federation": {"rounds": 0}})


def test_bad_choice_lists_allowed_values():
    with pytest.raises(ConfigError, match=r"simulation.arms.0.*'local'.*'fedavg'"):
        parse_config({"simulation": {"arms": ["fedsgd"]}})


def test_overrides_and_relative_paths(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[data]\nsource = "online_retail"\npath = "retail.csv"\n')
    config = load_config(path, ["federation.rounds=7", "privacy.enabled=false"])
    assert config.federation.rounds == 7
    assert not config.privacy.enabled
    assert config.data.path == str((tmp_path / "retail.csv").resolve())


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[data\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_per_scene_budget_overrides_the_default():
    config = parse_config({"privacy": {"epsilon": 8.0,
                                       "scenes": {"France": {"epsilon": 1.5, "delta": 1e-6}}}})
    assert config.privacy.budget_for("France").epsilon == 1.5
    assert config.privacy.budget_for("France").delta == 1e-6
    assert config.privacy.budget_for("Spain").epsilon == 8.0
    with pytest.raises(ConfigError, match="privacy.scenes.France.epsilon"):
        parse_config({"privacy": {"scenes": {"France": {"epsilon": -1}}}})


def test_privacy_sweep_values_are_checked():
    config = parse_config({"simulation": {"privacy_sweep": [1, 3.0, "none"]}})
    assert config.simulation.privacy_sweep == [1.0, 3.0, "none"]
    with pytest.raises(ConfigError, match="privacy_sweep"):
        parse_config({"simulation": {"privacy_sweep": [0.0]}})
    with pytest.raises(ConfigError, match="privacy_sweep"):
        parse_config({"simulation": {"privacy_sweep": ["off"]}})



def test_time_windows_need_a_public_end_date():
    with pytest.raises(ConfigError, match="need data.as_of"):
        parse_config({"training": {"recent_days": 90}}, "run.toml")
    with pytest.raises(ConfigError, match="not an ISO date"):
        parse_config({"data": {"as_of": "last week"}}, "run.toml")
    assert parse_config({"model": {"popularity_days": 90}, "data": {"as_of": "2011-12-10"}},
                        "run.toml").data.as_of == "2011-12-10"



# Each on top of a config with scenes, one transfer target and the default arms.
BASE = ['data.scenes=["a", "b"]', 'transfer.targets=["t"]', 'transfer.arms=["local", "probe"]']
CROSS_FIELD_MISTAKES = {
    # transfer.source must be an arm that trains, and at one privacy setting.
    "source not an arm": (['simulation.arms=["local", "fedper"]', 'transfer.source="fedavg"'],
                          "transfer.source"),
    "source under a sweep": (["simulation.privacy_sweep=[1, 8]"], "simulation.privacy_sweep"),
    "budget for no scene": (["privacy.scenes.atlantis.epsilon=2"], "privacy.scenes"),
    "unlabelled not a scene": (["alignment.enabled=true", 'alignment.unlabelled=["atlantis"]'],
                               "alignment.unlabelled"),
    "unlabelled without alignment": (['alignment.unlabelled=["a"]'], "alignment.enabled"),
    "alignment without scenes": (["alignment.enabled=true", "data.scenes=[]"], "data.scenes"),
    # Repeats would share one state directory and spend one budget twice.
    "an arm twice": (['simulation.arms=["local", "fedper", "local"]'], "simulation.arms"),
    "a scene twice": (['data.scenes=["a", "b", "a"]'], "data.scenes"),
    "a target twice": (['transfer.targets=["t", "t"]'], "transfer.targets"),
    "one epsilon twice": (['simulation.privacy_sweep=[8, 8.0]', 'transfer.arms=["local"]'],
                          "simulation.privacy_sweep"),
}


@pytest.mark.parametrize("mistake", sorted(CROSS_FIELD_MISTAKES))
def test_cross_field_mistakes_are_refused_at_load(mistake):
    overrides, key = CROSS_FIELD_MISTAKES[mistake]
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as error:
        load_config(None, BASE + overrides)
    assert "\n" not in str(error.value)


def test_the_rules_accept_what_they_should():
    load_config(None, BASE)  # source fedper is among the default arms
    load_config(None, BASE + ["simulation.privacy_sweep=[1, 8]", 'transfer.arms=["local"]'])
    load_config(None, BASE + ["alignment.enabled=true", 'alignment.unlabelled=["b"]',
                              "privacy.scenes.t.epsilon=2"])
    # Without data.scenes the scenes come from the data: a budget is checked there.
    load_config(None, BASE + ["data.scenes=[]", "privacy.scenes.toys.epsilon=2"])
    # Transfer arms that train their own federations need no source among the arms.
    load_config(None, BASE + ['transfer.arms=["local", "meta"]', 'simulation.arms=["local"]'])


def test_a_rule_across_sections_is_one_line_naming_its_keys():
    with pytest.raises(ConfigError) as error:
        load_config(None, BASE + ['simulation.arms=["local"]'])
    assert str(error.value).startswith("defaults: transfer.source = 'fedper' is not in")
    assert "\n" not in str(error.value) and "got" not in str(error.value)


def test_the_config_type_names_exactly_the_registry_s_algorithms():
    from typing import get_args

    from fedscene.common.algorithms import ALGORITHMS, algorithm
    from fedscene.common.config import Algorithm, TransferConfig

    assert set(get_args(Algorithm)) == set(ALGORITHMS)
    sources = get_args(TransferConfig.model_fields["source"].annotation)
    assert all(algorithm(name).alignable for name in sources)
