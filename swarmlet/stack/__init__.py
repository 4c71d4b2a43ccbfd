"""Stack files: Compose YAML -> ``ServiceSpec``s, and the plan of a deploy.

Public API (all pure but ``load_stack``, which reads the file and env files)::

    load_stack(path, env, name=None) -> Stack          # raises StackFileError
    parse_stack(text, filename, env, ...) -> Stack
    plan_deploy(current: {name: ServiceSpec}, stack, prune) -> DeployPlan
    render_plan(plan) -> str                           # the --dry-run text

Modules: ``loader`` (YAML with marks, interpolation via ``interpolate``),
``values`` (typed readers, warnings), ``compose`` (top level), ``service``,
``deploy``, ``ports``, ``volumes``, ``health`` (healthcheck, x-swarmlet),
``envfile``, ``plan`` and ``render``.
"""

from .compose import Stack, load_stack, parse_stack
from .plan import DeployPlan, FieldChange, ServiceChange, diff_specs, plan_deploy
from .render import render_plan
from .values import StackWarning
from .volumes import VolumeDef

__all__ = ["DeployPlan", "FieldChange", "ServiceChange", "Stack", "StackWarning", "VolumeDef",
           "diff_specs", "load_stack", "parse_stack", "plan_deploy", "render_plan"]
