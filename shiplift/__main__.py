from shiplift.cli import main

main()
