from asterfleet.cli.main import main

main()
