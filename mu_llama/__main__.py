from mu_llama.cli.main import main

raise SystemExit(main())
