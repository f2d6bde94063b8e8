"""The `kubeless-local` commands, one module per family; `root` puts them under one group."""
