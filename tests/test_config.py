import pytest

from medgen.config import OptimConfig, TrainerConfig, apply_overrides, check_against_signature, parse_override
from medgen.config import _dataclass_section
from medgen.errors import ConfigError


def test_override_parsing_types():
    assert parse_override("trainer.max_epochs=3") == (["trainer", "max_epochs"], 3)
    assert parse_override("data.root=/tmp/x") == (["data", "root"], "/tmp/x")
    assert parse_override("model.lam=1e-2")[1] == pytest.approx(0.01)
    assert parse_override("data.patch_size=[32,32,32]")[1] == [32, 32, 32]
    with pytest.raises(ConfigError):
        parse_override("novalue")


def test_overrides_nest_into_sections():
    raw = apply_overrides({"trainer": {"seed": 1}}, ["trainer.seed=5", "tracking.uri=sqlite:///x.db"])
    assert raw == {"trainer": {"seed": 5}, "tracking": {"uri": "sqlite:///x.db"}}


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="trainer.max_epoch"):
        _dataclass_section("trainer", TrainerConfig, {"max_epoch": 3})
    t = _dataclass_section("trainer", TrainerConfig, {"max_epochs": 3, "max_minutes": 2})
    assert t.max_epochs == 3 and t.max_minutes == 2.0
    with pytest.raises(ConfigError, match="optim.grad_clip"):
        _dataclass_section("optim", OptimConfig, {"grad_clip": "big"})


def test_a_typo_gets_the_key_it_was_meant_to_be():
    """`trainer.max_minute=1` listed 21 known keys and left the reader to find max_minutes."""
    with pytest.raises(ConfigError, match=r"unknown config key trainer.max_minute: did you mean trainer.max_minutes\? \(known: "):
        _dataclass_section("trainer", TrainerConfig, {"max_minute": 1})

    def ctor(root: str, patch_size: int = 32):
        return None

    with pytest.raises(ConfigError, match=r"data.patchsize: did you mean data.patch_size\?"):
        check_against_signature("data", {"root": "/x", "patchsize": 16}, ctor)
    with pytest.raises(ConfigError) as err:  # nothing close: no guess
        check_against_signature("data", {"root": "/x", "colour": 1}, ctor)
    assert "did you mean" not in str(err.value) and "known: patch_size, root" in str(err.value)


def test_signature_sections_reject_unknown_and_check_types():
    def ctor(root: str, patch_size: int = 32, spacing: float | None = None):
        return None

    assert check_against_signature("data", {"root": "/x", "patch_size": 16}, ctor) == {"root": "/x", "patch_size": 16}
    with pytest.raises(ConfigError, match="data.patchsize"):
        check_against_signature("data", {"root": "/x", "patchsize": 16}, ctor)
    with pytest.raises(ConfigError, match="data.patch_size"):
        check_against_signature("data", {"root": "/x", "patch_size": "big"}, ctor)
    with pytest.raises(ConfigError, match="data.root"):
        check_against_signature("data", {}, ctor)


def test_construct_keeps_bugs_as_tracebacks():
    """A refused value is a config error; a TypeError raised by a bug inside a constructor is not."""
    from medgen.engine.build import _construct
    from medgen.errors import ConfigError

    class Model:
        def __init__(self, width: int = 4, bug: bool = False):
            if width < 1:
                raise ConfigError(f"width must be at least 1, got {width}")
            if bug:
                None + 1  # noqa: B018 - a bug: TypeError

    with pytest.raises(ConfigError, match="model: width must be at least 1"):
        _construct("model", Model, {"width": 0})
    with pytest.raises(ConfigError, match="model: .*unexpected keyword"):
        _construct("model", Model, {"depth": 2})
    with pytest.raises(TypeError):
        _construct("model", Model, {"bug": True})
