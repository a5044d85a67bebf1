from leptonctl.cli.app import main

main()
