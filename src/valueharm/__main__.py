from valueharm.cli import main

main()
