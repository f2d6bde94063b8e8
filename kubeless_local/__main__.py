from kubeless_local.commands.root import main

main(prog_name="kubeless-local")
