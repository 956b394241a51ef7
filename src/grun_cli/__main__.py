from grun_cli.cli import main

main()
