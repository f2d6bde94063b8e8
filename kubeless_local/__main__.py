from kubeless_local.commands.entry import entry

entry()
