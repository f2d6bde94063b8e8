from kubeless_local.cli import main

main()
