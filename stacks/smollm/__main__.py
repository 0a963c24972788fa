"""The SmolLM2 chat service. Edit model.yaml, then `pulumi preview --diff` and `pulumi up`.

Optional: `pulumi config set --secret apiKey <key>` plus `serving.api_key_env` in model.yaml
make the service require that key.
"""

import pulumi

from iac.deploy.service import export_service

config = pulumi.Config()
export_service(config.get("spec") or "model.yaml", api_key=config.get_secret("apiKey"))
