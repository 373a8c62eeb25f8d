"""Reports: the Markdown leaderboard (`leaderboard`) and its plots (`plots`), rendered from records only."""
