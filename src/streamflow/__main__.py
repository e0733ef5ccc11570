from streamflow.app.cli import main

main()
