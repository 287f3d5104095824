"""The imctl commands, one module per area; imctl.cli puts them together."""
