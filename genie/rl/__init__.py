"""genie.rl: agents trained inside a world (PPO on the batched env), scored in the real game."""
