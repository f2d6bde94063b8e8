from kubeless_local.cli import main

main(prog_name="kubeless-local")
