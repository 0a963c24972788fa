"""The digits model service. Edit model.yaml, then `pulumi preview --diff` and `pulumi up`.

Optional: `pulumi config set --secret apiKey <key>` makes the service require that key.
"""

import pulumi

from iac.components.model_service import ModelService, ModelServiceArgs
from iac.load import load_resolved

config = pulumi.Config()
spec = load_resolved(config.get("spec") or "model.yaml")
service = ModelService(
    spec.name,
    ModelServiceArgs(spec=spec, project=pulumi.get_project(), stack=pulumi.get_stack(), api_key=config.get_secret("apiKey")),
)
for name, value in service.outputs.items():
    pulumi.export(name, value)
