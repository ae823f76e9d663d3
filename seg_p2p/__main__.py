from seg_p2p.cli import main

main()
