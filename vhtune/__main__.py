from vhtune.cli import main

main()
