-- A held poll looking again after a wake-up. ARGV: [4] client, [5] has
-- since 0|1, [6] since epoch, [7] since seq, [8] max bytes, [9] overhead
return done(read(ARGV[4], ARGV[5] == '1', tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])))
