"""The work a node is handed: jobs it decides again and answers (``jobs``), reviewed code
it takes for the enterprise's review (``code``), hand-overs it takes again after a crash
(``recovery``), and its record of each job (``models``)."""
