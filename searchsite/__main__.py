from searchsite.cli import main

main()
