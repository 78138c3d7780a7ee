"""fmrivid.runner: a rule's names become its stage function's keyword arguments, and mismatches are named."""

import pytest

from fmrivid.runner import RuleMismatch, stage_kwargs


def stage(fmri_path, cfg, out_model, out_path=None, sub=None, log=print, **decoded):
    return locals()


def test_inputs_outputs_params_and_wildcards_map_by_name():
    kw = stage_kwargs("r", stage, [("fmri_path", "a.h5"), ("first", ["x.h5", "y.h5"])],
                      ([("model", "m.safetensors")], ["m.safetensors", "t.tsv"]),
                      [("cfg", {"k": 1}), ("stage", {"module": "x"})], {"sub": "01", "chunk": "000"}, threads=2)
    assert kw == {"fmri_path": "a.h5", "first": ["x.h5", "y.h5"], "out_model": "m.safetensors", "out_path": "t.tsv",
                  "cfg": {"k": 1}, "sub": "01"}  # `chunk` is not a parameter; `stage` is the runner's


def test_a_name_the_stage_does_not_take_is_an_error_naming_rule_and_name():
    def strict(fmri_path, out_path, log=print):
        pass

    with pytest.raises(RuleMismatch, match=r"rule decode: param 'cfg' is not a parameter"):
        stage_kwargs("decode", strict, [("fmri_path", "a")], ([], ["o"]), [("cfg", {})])
    with pytest.raises(RuleMismatch, match="2 unnamed outputs"):
        stage_kwargs("decode", strict, [("fmri_path", "a")], ([], ["o", "p"]), [])
    with pytest.raises(RuleMismatch, match="'fmri_path' is also given"):
        stage_kwargs("decode", stage, [("fmri_path", "a")], ([], []), [("fmri_path", "b")])
