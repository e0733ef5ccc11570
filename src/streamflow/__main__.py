from streamflow.cli import main

main()
