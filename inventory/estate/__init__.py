"""The estate file: one documented format (schema), import, export and the demo estate."""
