"""The directory of recipient offices: offices through time, groups, import/export, tile maps."""
