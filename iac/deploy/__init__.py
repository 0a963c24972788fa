"""The deploy stage: Pulumi resources shared by every target (artifact, image) and the targets themselves."""
