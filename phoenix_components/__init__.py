"""Phoenix's Pulumi components, config models and the offline CLI."""
