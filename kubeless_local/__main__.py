from kubeless_local.commands.root import entry

entry()
