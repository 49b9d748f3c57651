// The openai npm SDK against insieme: streamed chat with usage.
import OpenAI from 'openai';

const client = new OpenAI();
const stream = await client.chat.completions.create({
  model: 'HuggingFaceTB/SmolLM2-135M-Instruct',
  messages: [{ role: 'user', content: 'Say hello.' }],
  stream: true,
  max_tokens: 16,
  stream_options: { include_usage: true },
});
let text = '';
let usage = null;
for await (const chunk of stream) {
  text += chunk.choices[0]?.delta?.content || '';
  if (chunk.usage) usage = chunk.usage;
}
console.log(JSON.stringify({ text, usage }));
