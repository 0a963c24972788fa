"""The digits CNN service. Edit model.yaml, then `pulumi preview --diff` and `pulumi up`."""

import pulumi

from iac.components.model_service import ModelService, ModelServiceArgs
from iac.load import load_resolved

config = pulumi.Config()
spec = load_resolved(config.get("spec") or "model.yaml")
service = ModelService(spec.name, ModelServiceArgs(spec=spec, project=pulumi.get_project(), stack=pulumi.get_stack()))
for name, value in service.outputs.items():
    pulumi.export(name, value)
