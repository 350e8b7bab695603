from stocktrade.cli import main

main()
