"""The one entry point of every rule: ``workflow_scripts/run_stage.py`` hands its ``snakemake`` object here.

A rule of ``rules/<domain>.smk`` declares ``params: stage=stage("<domain>")`` (``rules/common.smk``): the stage
module ``fmrivid.<domain>.stages`` and the fingerprint of its import closure (:mod:`fmrivid.fingerprint`). The
runner calls the function of that module named as the rule, with keyword arguments:

* each named input, under its name (a list of files stays a list);
* each named output as ``out_<name>``; one unnamed output as ``out_path``;
* each param but ``stage``, under its name;
* each wildcard and ``threads``, under their names, when the function has a parameter of that name;
* ``log``: a callable writing timestamped lines to the rule's log file (and stderr).

So the rule is the only place that names a stage's files: there is no per-rule script to keep in step. A
:class:`fmrivid.errors.FmrividError` ends the job with one ``ERROR:`` line naming the file or key.
"""

from __future__ import annotations

import importlib
import inspect


class RuleMismatch(TypeError):
    """A rule's names do not fit its stage function's parameters (a workflow bug, not a user error)."""


def _plain(value):
    """Snakemake's Namedlist -> list; strings and other values unchanged."""
    return list(value) if isinstance(value, list) else value


def stage_kwargs(rule, fn, inputs, outputs, params, wildcards=None, threads=1):
    """Keyword arguments of stage function ``fn`` of rule ``rule`` (see the module docstring).

    ``inputs``/``outputs``/``params``: (name, value) pairs of the named entries, and for outputs the list of all
    files (to find an unnamed one). Raises :class:`RuleMismatch` naming the rule and the name that does not fit.
    """
    sig = inspect.signature(fn)
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    kwargs = {}

    def put(name, value, what):
        if name in kwargs:
            raise RuleMismatch(f"rule {rule}: {what} {name!r} is also given by another input/output/param")
        if name not in sig.parameters and not accepts_any:
            raise RuleMismatch(f"rule {rule}: {what} {name!r} is not a parameter of {fn.__module__}.{fn.__name__}"
                               f"{sig}")
        kwargs[name] = _plain(value)

    named_outputs, all_outputs = outputs
    for name, value in inputs:
        put(name, value, "input")
    for name, value in named_outputs:
        put(f"out_{name}", value, "output")
    named_files = {str(f) for _, v in named_outputs for f in (v if isinstance(v, list) else [v])}
    unnamed = [f for f in all_outputs if str(f) not in named_files]
    if len(unnamed) > 1:
        raise RuleMismatch(f"rule {rule}: {len(unnamed)} unnamed outputs; name them (out_<name>)")
    if unnamed:
        put("out_path", unnamed[0], "output")
    for name, value in params:
        if name != "stage":
            put(name, value, "param")
    for name, value in (wildcards or {}).items():
        if name in sig.parameters and name not in kwargs:
            kwargs[name] = value
    if "threads" in sig.parameters:
        kwargs["threads"] = threads
    return kwargs


def run(smk):
    """Run the stage function of the rule that called ``workflow_scripts/run_stage.py``."""
    from fmrivid.utils import run_stage

    module = importlib.import_module(smk.params.stage["module"])
    fn = getattr(module, smk.rule, None)
    if fn is None:
        raise RuleMismatch(f"rule {smk.rule}: {module.__name__} has no function {smk.rule!r} (a stage function is "
                           "named as its rule)")
    kwargs = stage_kwargs(smk.rule, fn, list(smk.input.items()), (list(smk.output.items()), list(smk.output)),
                          list(smk.params.items()), dict(smk.wildcards.items()), smk.threads)
    run_stage(fn, smk.log[0] if smk.log else None, smk.threads, **kwargs)
