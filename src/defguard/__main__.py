from defguard.cli import main

main()
