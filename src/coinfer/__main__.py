from coinfer.cli import main

main()
