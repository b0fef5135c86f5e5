// Faye (npm `faye`, unchanged) in Node against the real cometbox binary.
import { scenarios } from './scenarios.mjs';
import { fayeClient } from '../lib/clients.mjs';

scenarios('faye', fayeClient);
